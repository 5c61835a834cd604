"""Model files from elsewhere are data, not instructions (reliability III):
absurd sizes are refused in one line before Keras builds anything."""

import json
import zipfile

import keras
import pytest

from helpers import SMALL
from ninlayers import NiN, saving
from ninlayers.errors import ModelFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small NiN's `.keras` file: its members' bytes by name."""
    path = tmp_path_factory.mktemp("saved") / "m.keras"
    NiN(num_classes=2, input_shape=(16, 16, 1), architecture=SMALL).save(path)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(saved, path, edit=None, config_text=None):
    """`saved` written to `path` with its config edited."""
    config = json.loads(saved["config.json"])
    if edit is not None:
        edit(config["config"])
    text = config_text if config_text is not None else json.dumps(config)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in saved.items():
            archive.writestr(name, text if name == "config.json" else data)
    return path


@pytest.fixture
def keras_never_runs(monkeypatch):
    """Refusals happen before Keras reads the file."""

    def fail(*args, **kwargs):
        raise AssertionError("Keras was asked to load a file that must be refused")

    monkeypatch.setattr(keras.saving, "load_model", fail)


def test_the_untouched_file_loads(saved, tmp_path):
    model = saving.load_model(rewrite(saved, tmp_path / "m.keras"))
    assert model.count_params() > 0


def set_block(index, **values):
    def edit(config):
        config["architecture"][index].update(values)

    return edit


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (set_block(1, filters=10**9), "filters of 1,000,000,000; expected at most"),
        (set_block(0, filters=[60_000, 60_000]), r"about 3,6[0-9,]+ parameters"),
        (set_block(0, kernel_size=100_000), "kernel_size of 100,000"),
        (lambda c: c.update(num_classes=10**7), "num_classes of 10,000,000"),
        (lambda c: c.update(input_shape=[10**6, 10**6, 1]), "input_shape of 1,000,"),
        (lambda c: c.update(head_kernel_size=10**5), "head_kernel_size of 100,000"),
    ],
)
def test_absurd_sizes_are_refused_before_anything_is_built(
    saved, tmp_path, keras_never_runs, edit, fragment
):
    path = rewrite(saved, tmp_path / "m.keras", edit)
    with pytest.raises(ModelFileError, match=rf"m\.keras is refused: .*{fragment}"):
        saving.load_model(path)


def test_deeply_nested_configs_are_refused(saved, tmp_path, keras_never_runs):
    for depth in (150, 100_000):
        nested = "[" * depth + "]" * depth
        path = rewrite(saved, tmp_path / f"{depth}.keras", config_text=nested)
        with pytest.raises(ModelFileError, match="its config asks for nesting"):
            saving.load_model(path)


def test_a_huge_config_that_compresses_to_kilobytes_is_refused_unread(
    saved, tmp_path, keras_never_runs
):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", saved["metadata.json"])
        with archive.open("config.json", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(b" " * 2**20)
    assert path.stat().st_size < 2**20
    with pytest.raises(ModelFileError, match=r"'config\.json' declares 209,715,200"):
        saving.load_model(path)


def test_a_config_that_is_not_json_is_one_line(saved, tmp_path, keras_never_runs):
    path = rewrite(saved, tmp_path / "m.keras", config_text="{not json")
    with pytest.raises(ModelFileError, match="config.json that is not JSON"):
        saving.load_model(path)


def test_the_cli_refuses_in_one_line(saved, tmp_path, capsys):
    from ninlayers.app import cli

    path = rewrite(saved, tmp_path / "m.keras", set_block(1, filters=10**9))
    status = cli.main(["predict", str(path), str(tmp_path / "none.png")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "is refused" in err
