"""Per-device choices: the policy and XLA setting each device calls for."""

import pytest

from ninlayers import NiN, runtime


@pytest.mark.parametrize(
    "gpus, bf16_cpu, expected",
    [
        ([], True, "mixed_bfloat16"),
        ([], False, "float32"),
        ([(8, 0)], True, "mixed_float16"),
        ([(9, 0), (8, 6)], False, "mixed_float16"),
        ([(6, 1)], True, "float32"),  # no tensor cores
        ([(8, 0), (6, 0)], True, "float32"),
    ],
)
def test_auto_precision_follows_the_device(monkeypatch, gpus, bf16_cpu, expected):
    monkeypatch.setattr(runtime, "gpu_compute_capabilities", lambda: gpus)
    monkeypatch.setattr(runtime, "cpu_supports_bfloat16", lambda: bf16_cpu)
    monkeypatch.delenv("NINLAYERS_PRECISION", raising=False)
    assert runtime.resolve_precision("auto") == expected
    assert runtime.resolve_jit_compile("auto") is bool(gpus)
    model = NiN(
        input_shape=(16, 16, 1), architecture=[{"filters": 4, "kernel_size": 3}]
    )
    assert model.dtype_policy.name == expected
    assert model.get_layer("head").output_layer.compute_dtype == "float32"


def test_explicit_choices_win(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_supports_bfloat16", lambda: True)
    monkeypatch.setattr(runtime, "gpu_compute_capabilities", lambda: [])
    assert runtime.resolve_precision("float32") == "float32"
    assert runtime.resolve_jit_compile(True) is True
    monkeypatch.setenv("NINLAYERS_PRECISION", "float32")
    assert runtime.resolve_precision("auto") == "float32"
    model = NiN(
        input_shape=(16, 16, 1),
        dtype="mixed_float16",
        architecture=[{"filters": 4, "kernel_size": 3}],
    )
    assert model.dtype_policy.name == "mixed_float16"


def test_cpu_flags_are_read_from_cpuinfo():
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    expected = ("amx_bf16" in flags.split()) or ("avx512_bf16" in flags.split())
    assert runtime.cpu_supports_bfloat16() is expected


@pytest.mark.parametrize("bad", ["fast", "bf16", 16])
def test_bad_choices_are_refused(bad):
    with pytest.raises(ValueError, match="Received: precision="):
        runtime.resolve_precision(bad)
    with pytest.raises(ValueError, match="Received: jit_compile="):
        runtime.resolve_jit_compile(bad)


@pytest.mark.backends
def test_data_parallel_is_the_jax_backend_s_and_local_model_is_the_model():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with runtime.local_model(model) as local:
        assert local is model  # one process: nothing to copy
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="needs the TensorFlow backend"):
            runtime.get_strategy("mirrored")
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="needs KERAS_BACKEND=jax"):
            runtime.get_strategy("data-parallel")
        return
    try:
        strategy = runtime.get_strategy("data-parallel")
        assert isinstance(
            keras.distribution.distribution(), keras.distribution.DataParallel
        )
        assert strategy.num_replicas_in_sync == 1 and strategy.num_processes == 1
        assert runtime.strategy_name(strategy) == "DataParallel"
        assert not runtime.spans_processes(strategy)
    finally:
        keras.distribution.set_distribution(None)
