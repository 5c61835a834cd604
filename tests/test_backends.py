"""ninlayers on every Keras backend: imports, defaults, portable files
(JAX's data parallelism is in tests/app/test_distributed.py).

Each check runs in fresh processes, one per backend (Keras picks its backend
once, when it is imported), so the TensorFlow run of the suite tests all
three; the backend matrix runs the rest of the suite under JAX and PyTorch.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from ninlayers import runtime

BACKENDS = ("tensorflow", "jax", "torch")


def run_on(backend: str, code: str, extra_env: dict | None = None) -> str:
    """Runs `code` in a fresh process on `backend`; returns its stdout."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, **(extra_env or {})},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_backend_defaults_and_no_tensorflow_elsewhere(backend):
    """One fresh process per backend: its defaults, and (on JAX and
    PyTorch) importing, building and compiling NiN import no TensorFlow."""
    build = "ninlayers.NiN().compile()" if backend != "tensorflow" else ""
    out = run_on(
        backend,
        f"""
        import json, sys
        import ninlayers
        from ninlayers import runtime
        {build}
        print(json.dumps([
            runtime.resolve_jit_compile("auto"),
            runtime.resolve_precision("auto"),
            runtime.gpu_compute_capabilities(),
        ]))
        tensorflow = [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
        print(json.dumps(sorted(tensorflow)))
        """,
        {"NINLAYERS_PRECISION": "auto"},
    )
    defaults, tensorflow = out.strip().splitlines()[-2:]
    jit, precision, gpus = json.loads(defaults)
    assert gpus == []  # these test machines have no GPU
    assert jit is (backend == "jax")
    bfloat16 = runtime.cpu_supports_bfloat16() and backend != "jax"
    assert precision == ("mixed_bfloat16" if bfloat16 else "float32")
    if backend != "tensorflow":
        assert json.loads(tensorflow) == []


SAVE = """
import numpy as np, keras, ninlayers
keras.utils.set_random_seed(0)
model = ninlayers.NiN(
    num_classes=4, input_shape=(16, 16, 1), use_batch_norm=True,
    architecture=[{"filters": 8, "kernel_size": 3}, {"filters": 16, "kernel_size": 3}],
    precision="float32", test_time_flip=True, test_time_shift=1,
    class_names=list("abcd"),
)
model.compile(optimizer="sgd")
x = np.random.default_rng(1).uniform(size=(8, 16, 16, 1)).astype("float32")
model.fit(x, np.arange(8) % 4, epochs=1, verbose=0)
model.save(r"{path}")
np.save(r"{path}.npy", model.predict(x, verbose=0))
"""

LOAD = """
import json, numpy as np, keras, ninlayers
x = np.random.default_rng(1).uniform(size=(8, 16, 16, 1)).astype("float32")
out = {{}}
for name in {names!r}:
    model = keras.saving.load_model(r"{folder}/" + name + ".keras")
    got = model.predict(x, verbose=0)
    want = np.load(r"{folder}/" + name + ".keras.npy")
    out[name] = [float(np.max(np.abs(got - want))), model.class_names]
print(json.dumps(out))
"""


#: Formats Keras's `Model.export` must write on each backend (the others
#: may instead raise one line naming what is missing).
EXPORTS = {"jax": {"tf_saved_model"}, "torch": {"onnx"}}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_nin_export_on_other_backends_works_or_says_why(backend, tmp_path):
    # TensorFlow's three formats are tested in tests/test_deploy.py.
    out = run_on(
        backend,
        f"""
        import json
        import numpy as np
        from ninlayers import NiN, export
        from ninlayers.exported import ExportedModel

        model = NiN(input_shape=(16, 16, 1), architecture=[[8, 3]], num_classes=3)
        x = np.random.default_rng(0).uniform(size=(4, 16, 16, 1)).astype("float32")
        reference = np.asarray(export.float32_copy(model).predict(x, verbose=0))
        outcomes = {{}}
        for format, name in [
            ("tf_saved_model", "saved"), ("onnx", "m.onnx"), ("litert", "m.tflite")
        ]:
            path = r"{tmp_path}/" + name
            try:
                model.export(path, format=format, verbose=False)
            except (ImportError, ValueError) as error:
                outcomes[format] = ["refused", str(error)]
                continue
            got = ExportedModel(path).predict(x)
            outcomes[format] = ["exported", float(np.abs(got - reference).max())]
        print(json.dumps(outcomes))
        """,
    )
    outcomes = json.loads(out.strip().splitlines()[-1])
    assert set(outcomes) == {"tf_saved_model", "onnx", "litert"}
    for format, (outcome, detail) in outcomes.items():
        if format in EXPORTS[backend]:
            assert outcome == "exported", (format, detail)
        if outcome == "exported":
            assert detail < 1e-4, format
        else:
            assert "\n" not in detail and len(detail) < 400, detail


@pytest.mark.slow
def test_keras_files_cross_backends_with_equal_predictions(tmp_path):
    """Each backend loads the files the other two saved. This process's
    backend saves and loads in process; the other two take three processes:
    save and load what exists, then the first loads what the second saved."""
    import keras

    here = keras.backend.backend()
    first, second = [b for b in BACKENDS if b != here]

    def save(backend):
        return SAVE.replace("{path}", str(tmp_path / f"{backend}.keras"))

    def load(names):
        return LOAD.format(names=names, folder=tmp_path)

    def check(out, loaded_on):
        results = json.loads(out.strip().splitlines()[-1])
        for name, (difference, class_names) in results.items():
            assert difference < 1e-5, f"saved on {name}, loaded on {loaded_on}"
            assert class_names == list("abcd")
        return set(results)

    # No C++ compiler, as on a fresh machine: a file saved on JAX (XLA on)
    # must not switch on torch.compile (whose inductor needs one) on PyTorch.
    no_cxx = {"CXX": "/nonexistent/c++"}
    exec(textwrap.dedent(save(here)), {})
    loaded = {first: check(run_on(first, save(first) + load([here]), no_cxx), first)}
    loaded[second] = check(
        run_on(second, save(second) + load([here, first]), no_cxx), second
    )
    loaded[first] |= check(run_on(first, load([second]), no_cxx), first)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(textwrap.dedent(load([first, second])), {})
    loaded[here] = check(printed.getvalue(), here)
    for backend, names in loaded.items():
        assert names == set(BACKENDS) - {backend}
