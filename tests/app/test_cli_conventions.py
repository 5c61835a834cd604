"""The conventions people look for in a command: --version, python -m, help
for every option, global options anywhere, JSON output, no POSIX-only import
on the way in."""

import argparse
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import ninlayers
import ninlayers_cli
from ninlayers.app import cli

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_version_is_printed_by_the_command_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ninlayers {ninlayers.__version__}"
    result = subprocess.run(
        [sys.executable, "-m", "ninlayers", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"ninlayers {ninlayers.__version__}"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    missing = [a.dest for a in parser._actions if not a.help]
    for name, sub in _subparsers(parser):
        missing += [f"{name} {a.dest}" for a in sub._actions if not a.help]
    assert missing == []


@pytest.mark.parametrize("command", ["evaluate m", "predict m x.png", "train"])
def test_debug_and_backend_are_taken_after_the_command_too(command):
    parser = cli.build_parser()
    words = command.split()
    after = parser.parse_args([*words, "--debug", "--backend", "jax"])
    assert after.debug is True and after.backend == "jax"
    before = parser.parse_args(["--debug", "--backend", "jax", *words])
    assert before.debug is True and before.backend == "jax"
    neither = parser.parse_args(words)
    assert neither.debug is False and neither.backend is None
    # The launcher reads the same backend before Keras is imported.
    for argv in ([*words, "--backend", "torch"], ["--backend=jax", *words], words):
        assert ninlayers_cli.requested_backend(argv) == parser.parse_args(argv).backend


def test_the_launcher_leaves_a_wrong_backend_to_the_commands_parser():
    # The launcher cannot import the command's module (that imports Keras):
    # its list of backends is a copy, kept equal here.
    assert ninlayers_cli.BACKENDS == cli.BACKENDS
    assert ninlayers_cli.requested_backend(["train", "--backend", "theano"]) is None
    assert ninlayers_cli.requested_backend(["train", "--backend"]) is None


@pytest.mark.slow
def test_predict_json_writes_one_object_per_image(tmp_path, capsys):
    from ninlayers.app import data

    _, (x, y) = data.load_fashion_mnist()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x[i]).save(paths[-1])
    status = cli.main(["predict", "fashion_mnist", *map(str, paths), "--json"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert [r["class"] for r in results] == [data.CLASS_NAMES[i] for i in y[:2]]
    for result in results:
        assert len(result["top"]) == 3
        assert result["top"][0]["class"] == result["class"]
        assert 0 <= result["top"][0]["probability"] <= 1


def test_the_command_imports_where_there_is_no_fcntl():
    """Windows has no fcntl: the lock falls back to msvcrt, and importing
    the command needs neither until a run takes its lock."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import ninlayers.app.cli, ninlayers.app.lock\n"
        "print(ninlayers.app.cli.build_parser().prog)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ninlayers"


def test_evaluate_shows_progress_when_asked(tmp_path, capsys):
    from ninlayers import NiN, app

    model = NiN(input_shape=(28, 28, 1), architecture=[[8, 3]], precision="float32")
    scores = app.evaluate(model, limit=60, batch_size=20, verbose=1)
    assert scores["examples"] == 60
    assert "3/3" in capsys.readouterr().out  # Keras's bar, batch by batch
    app.evaluate(model, limit=60, batch_size=20)
    assert capsys.readouterr().out == ""
