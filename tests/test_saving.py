"""Saving and loading `.keras` files, alone and inside users' models."""

import textwrap

import keras
import numpy as np
import pytest

from helpers import SMALL, run_python
from ninlayers import NiN, NiNBlock, NiNClassifierHead, runtime

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends

USER_MODULE = textwrap.dedent(
    """
    import keras
    import ninlayers


    @keras.saving.register_keras_serializable(package="user")
    class Classifier(keras.Model):
        '''A user's subclassed model built from ninlayers layers.'''

        def __init__(self, num_classes=5, **kwargs):
            super().__init__(**kwargs)
            self.num_classes = num_classes
            self.block = ninlayers.NiNBlock(8, 3, use_batch_norm=True)
            self.pool = keras.layers.MaxPooling2D(2)
            self.head = ninlayers.NiNClassifierHead(num_classes)

        def call(self, x, training=None):
            return self.head(self.pool(self.block(x, training=training)),
                             training=training)

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes}
    """
)


def sequential():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            NiNBlock(8, 3, use_batch_norm=True),
            keras.layers.MaxPooling2D(2),
            NiNClassifierHead(5),
        ]
    )


def functional():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = NiNBlock(8, 5, strides=2)(x)
    outputs = NiNClassifierHead(5, output_activation=None)(x)
    return keras.Model(inputs, outputs)


def nin_inside_functional():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.RandomFlip()(inputs)
    outputs = NiN(
        num_classes=5, input_shape=(16, 16, 3), architecture=SMALL, use_batch_norm=True
    )(x)
    return keras.Model(inputs, outputs)


def subclassed(tmp_path):
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("usermodels")
    finally:
        sys.path.remove(str(tmp_path))
    return module.Classifier(5)


BUILDERS = {
    "nin": lambda tmp: NiN(
        num_classes=5, input_shape=(16, 16, 3), architecture=SMALL, use_batch_norm=True
    ),
    "nin_default": lambda tmp: NiN(),
    "sequential": lambda tmp: sequential(),
    "functional": lambda tmp: functional(),
    "nin_inside_functional": lambda tmp: nin_inside_functional(),
    "subclassed": subclassed,
}


def saved(kind, tmp_path):
    """Builds `kind`, trains it one step (so batch-norm statistics and the
    optimizer state differ from their initial values) and saves it with its
    inputs and predictions in `tmp_path / kind`; the model."""
    folder = tmp_path / kind
    folder.mkdir()
    model = BUILDERS[kind](tmp_path)
    shape = (4, 28, 28, 1) if kind == "nin_default" else (4, 16, 16, 3)
    x = np.random.default_rng(0).uniform(0, 1, size=shape).astype("float32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(4) % 5, epochs=1, verbose=0)
    model.save(folder / "model.keras")
    np.save(folder / "x.npy", x)
    np.save(folder / "expected.npy", model.predict(x, verbose=0))
    return model


@pytest.mark.slow
def test_saved_models_load_in_a_fresh_process_with_identical_predictions(tmp_path):
    """Every kind of model, saved here, loads in one fresh process (the
    subclassed one last, after importing its module: the others need no
    custom objects) with the same class, size and predictions."""
    kinds = sorted(BUILDERS, key=lambda kind: kind == "subclassed")
    models = {kind: saved(kind, tmp_path) for kind in kinds}
    out = run_python(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import keras
        import numpy as np
        import ninlayers
        for kind in {kinds!r}:
            if kind == "subclassed":
                import usermodels
            folder = {str(tmp_path)!r} + "/" + kind
            model = keras.saving.load_model(folder + "/model.keras")
            got = model.predict(np.load(folder + "/x.npy"), verbose=0)
            diff = np.max(np.abs(got - np.load(folder + "/expected.npy")))
            print(kind, type(model).__name__, model.count_params(), float(diff))
        """
    )
    lines = [line.split() for line in out.splitlines()]
    lines = [line for line in lines if line and line[0] in kinds]
    assert [line[0] for line in lines] == kinds
    for kind, name, params, diff in lines:
        assert int(params) == models[kind].count_params(), kind
        assert float(diff) == 0.0, kind
        if kind.startswith("nin") and kind != "nin_inside_functional":
            assert name == "NiN"


def test_reloaded_nin_keeps_its_config_compile_state_and_weights(tmp_path):
    model = NiN(
        num_classes=3,
        input_shape=(None, None, 1),
        architecture=SMALL,
        gradient_clip_norm=2.0,
        output_activation=None,
        precision="float32",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(np.zeros((4, 16, 16, 1)), np.zeros(4), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, NiN)
    assert loaded.get_config() == model.get_config()
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.SGD)
    assert loaded.loss.from_logits
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Training goes on from the reloaded optimizer state.
    loaded.fit(np.zeros((4, 16, 16, 1)), np.zeros(4), verbose=0)


def test_explicit_dtype_is_saved_and_restored(tmp_path):
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, dtype="float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.dtype_policy.name == "float32"
    assert loaded.get_layer("block1").dtype_policy.name == "float32"


@pytest.mark.backends
@pytest.mark.parametrize("asked", ["auto", False])
def test_the_compile_config_keeps_jit_compile_as_asked(asked):
    """A file records "auto" when "auto" was asked, so that the backend that
    loads it resolves XLA for itself (JAX's True would turn on torch.compile
    on PyTorch)."""
    model = NiN(input_shape=(16, 16, 1), architecture=[(8, 3)])
    model.compile(jit_compile=asked)
    assert model.get_compile_config()["jit_compile"] == asked
    loaded = NiN.from_config(model.get_config())
    loaded.compile_from_config(model.get_compile_config())
    assert loaded.jit_compile == runtime.resolve_jit_compile(asked)
