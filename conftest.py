"""Collection rules for the whole repository (doctests of src/ included).

- The step module of each Keras backend imports that backend's framework:
  only the active backend's is collected (ninlayers imports only that one).
- The library's doctests carry the `backends` marker, as the test modules
  that run on every Keras backend do (the README's backend matrix runs
  `-m backends` under JAX and PyTorch), except those that convert through
  TensorFlow (`TENSORFLOW_DOCTESTS`).
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA (JAX's compiler, and TensorFlow's under `jit_compile`) compiles every
# shape a test draws, and its LLVM optimisation passes take most of that
# time on these CPUs: two of the JAX backend's Hypothesis tests took 50 s
# with them and 18.5 s without. The tests check results, not speed: they,
# and the processes they start (which inherit it), compile at -O0 unless
# XLA_FLAGS is set already.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

_BACKEND = os.environ["KERAS_BACKEND"]
collect_ignore = [
    f"src/ninlayers/_steps/{name}.py"
    for name in ("tensorflow", "jax", "torch")
    if name != _BACKEND
]


#: Doctests that export through TensorFlow's converters (TensorFlow only).
TENSORFLOW_DOCTESTS = (
    "ninlayers.export.",
    "ninlayers.exported.",
    "ninlayers.classifier.NiNImageClassifier.export",
)


def pytest_collection_modifyitems(items):
    library = Path(__file__).parent / "src" / "ninlayers"
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            path = Path(str(item.path))
            if path.parent == library and not item.name.startswith(TENSORFLOW_DOCTESTS):
                item.add_marker(pytest.mark.backends)
