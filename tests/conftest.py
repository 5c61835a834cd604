"""Shared test set-up: quiet TensorFlow, Hypothesis profiles, a fixed seed."""

import os
import sys
from pathlib import Path

# tests/app/ imports `helpers` from here.
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# "backend": JAX and PyTorch compile (or run eagerly) each drawn case more
# slowly than TensorFlow, so the backend matrix draws fewer of them.
for _name, _examples in (("default", 12), ("thorough", 100), ("backend", 5)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=_name != "thorough",
    )
_DEFAULT_PROFILE = (
    "default" if os.environ["KERAS_BACKEND"] == "tensorflow" else "backend"
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _DEFAULT_PROFILE))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
