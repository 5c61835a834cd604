"""Presets: named NiNs in one line, offline; the default learns every seed."""

import keras
import numpy as np
import pytest

import ninlayers
from helpers import SMALL, synthetic
from ninlayers import NiN, NiNBackbone, NiNImageClassifier, presets
from ninlayers.errors import ModelFileError

pytestmark = pytest.mark.backends


def block_params(k, c_in, c_out, batch_norm, linear_last=False):
    """A NiN block: a kxk and two 1x1 convolutions; with batch norm, each
    convolution loses its bias and gains 4 statistics per channel, except a
    linear last one (a head's class maps), which keeps its bias."""
    convs = [k * k * c_in * c_out, c_out * c_out, c_out * c_out]
    if not batch_norm:
        return sum(convs) + 3 * c_out
    extra = [4 * c_out, 4 * c_out, c_out if linear_last else 4 * c_out]
    return sum(convs) + sum(extra)


def nin_params(stages, channels, classes, batch_norm, linear_maps):
    total, c_in = 0, channels
    for k, c_out in stages:
        total += block_params(k, c_in, c_out, batch_norm)
        c_in = c_out
    return total + block_params(3, c_in, classes, batch_norm, linear_maps)


SEED_28 = [(3, 96), (3, 256), (3, 384)]
SEED_224 = [(11, 96), (5, 256), (3, 384)]


def test_the_named_networks_have_their_parameter_counts():
    assert nin_params(SEED_28, 1, 10, False, False) == 1_588_198  # the seed's
    paper = NiN.from_preset("tutorial_fashion_mnist")
    assert paper.count_params() == 1_588_198
    assert not paper.backbone.use_batch_norm and paper.head_final_activation
    default = NiN()
    assert default.count_params() == nin_params(SEED_28, 1, 10, True, True)
    seed_224 = NiN.from_preset("tutorial_224")
    assert seed_224.count_params() == nin_params(SEED_224, 3, 10, False, False)
    assert seed_224.count_params() == 2_015_398
    assert seed_224.input_shape == (None, 224, 224, 3)
    dropouts = [layer.name for layer in seed_224.layers if "dropout" in layer.name]
    assert dropouts == ["dropout1", "dropout2"]


def test_presets_are_listed_with_a_description():
    listed = ninlayers.list_presets()
    assert set(listed) == set(presets.PRESETS) >= {"fashion_mnist", "tutorial_224"}
    assert all(isinstance(text, str) and text for text in listed.values())


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        NiN.from_preset("fashion_mnsit")
    message = str(info.value)
    assert "fashion_mnsit" in message and "tutorial_224" in message
    assert "\n" not in message
    with pytest.raises(ModelFileError, match="does not exist"):
        NiN.from_preset("missing/model.keras")


def test_a_file_or_a_run_directory_loads_as_saved(tmp_path):
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, num_classes=3)
    model.save(tmp_path / "model.keras")
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    expected = model.predict(x, verbose=0)
    for source in (tmp_path / "model.keras", tmp_path, str(tmp_path)):
        loaded = NiN.from_preset(source)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="named presets only"):
        NiN.from_preset(tmp_path, num_classes=4)


def test_named_presets_take_overrides():
    model = NiN.from_preset("tutorial_fashion_mnist", num_classes=5)
    assert model.output_shape == (None, 5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_the_default_nin_learns_with_compile_defaults(seed):
    import keras

    keras.utils.set_random_seed(seed)
    x, y = synthetic(512, seed)
    x_test, y_test = synthetic(512, 10_000 + seed)
    model = NiN(num_classes=2, input_shape=(16, 16, 1))
    model.compile()
    model.fit(x, y, epochs=4, verbose=0)
    accuracy = np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert accuracy >= 0.9, f"seed {seed}: held-out accuracy {accuracy}"


# The pretrained preset: its shipped weights, offline, on raw pixels.


#: The pretrained presets, from the registry itself.
PRETRAINED = [name for name, p in presets.PRESETS.items() if p.weights is not None]


def test_there_are_pretrained_presets_and_each_records_its_figures():
    assert {"fashion_mnist", "fashion_mnist_narrow"} <= set(PRETRAINED)
    for name in PRETRAINED:
        metrics = presets.get(name).metrics
        assert 0.9 < metrics["test_accuracy"] < 1 and metrics["measured_in"]
        assert presets.get(name).data and presets.get(name).converter["check_range"]


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds_its_three_pieces_with_its_recorded_parameters(name):
    """keras-hub's `run_preset_test`, for every preset in the registry."""
    preset = presets.get(name)
    model = NiNImageClassifier.from_preset(name, load_weights=False)
    assert isinstance(model.backbone, NiNBackbone)
    assert model.count_params() == preset.metrics["parameters"]
    assert (
        model.get_config()["backbone"]["config"]["architecture"]
        == (preset.backbone["architecture"])
    )
    backbone = NiNBackbone.from_preset(name, load_weights=False)
    assert backbone.output_shape == model.backbone.output_shape
    # No architecture is called like a preset and means another network.
    if name in ninlayers.ARCHITECTURES:
        assert preset.backbone["architecture"] == name


@pytest.mark.parametrize("name", PRETRAINED)
def test_the_shipped_weights_match_their_digest_and_tampering_is_refused(
    name, tmp_path, monkeypatch
):
    path = presets.weights_path(name)
    assert path.is_file() and path.stat().st_size < 8_000_000
    assert ninlayers.saving.file_sha256(path) == presets.PRESETS[name].sha256
    metrics = presets.get(name).metrics
    assert NiN.from_preset(name).count_params() == metrics["parameters"]
    tampered = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(presets, "_WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelFileError, match="fail their check"):
        NiN.from_preset(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRETRAINED)
def test_the_pretrained_preset_reaches_its_accuracy_offline_on_raw_pixels(name):
    from helpers import run_python

    out = run_python(
        f"""
        import socket

        def no_network(*args, **kwargs):
            raise OSError("this test runs without network")

        socket.socket.connect = no_network
        socket.create_connection = no_network
        import numpy as np
        import ninlayers
        from ninlayers.app import data

        _, (x, y) = data.load_fashion_mnist()
        model = ninlayers.NiN.from_preset("{name}")
        probs = model.predict(x[..., None], batch_size=500, verbose=0)
        print(x.dtype, model.class_names[0], np.mean(probs.argmax(-1) == y))
        """
    )
    dtype, first_class, accuracy = out.split()[-3:]
    assert (dtype, first_class) == ("uint8", "T-shirt/top")
    # As measured when the weights were made (docs/presets.md, on
    # TensorFlow with batch norm a kernel of its own), to within a few
    # images of bfloat16 rounding: predict folds batch norm into the
    # kernels, rounded to bfloat16 once where the two kernels round twice
    # (`fashion_mnist_narrow`: 0.9403 on PyTorch and 0.9402 on TensorFlow
    # for 0.9397).
    expected = presets.get(name).metrics["test_accuracy"]
    tolerance = 0.0005 if keras.backend.backend() == "jax" else 0.001
    assert float(accuracy) == pytest.approx(expected, abs=tolerance)


def test_the_old_preset_names_build_the_renamed_presets_with_a_warning():
    with pytest.warns(DeprecationWarning, match="tutorial_fashion_mnist"):
        old = NiN.from_preset("seed_fashion_mnist", precision="float32")
    new = NiN.from_preset("tutorial_fashion_mnist", precision="float32")
    assert old.get_config()["backbone"] == new.get_config()["backbone"]
