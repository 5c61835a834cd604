"""NiN's training step, one small module per Keras backend.

Keras 3 runs `train_step(data)` on TensorFlow and PyTorch and the stateless
`train_step(state, data)` on JAX. Each module here implements the one
contract of `NiN.train_step` for its backend: the loss logged as Keras logs
it, optional clipping of the gradients to a global norm, and the
`gradient_norm` metric (the norm before clipping). `common` holds what they
share; only the active backend's module is imported.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def for_backend(backend: str | None = None) -> ModuleType:
    """Returns the step module of `backend` (default: Keras's active one)."""
    backend = backend or keras.backend.backend()
    if backend not in _MODULES:
        raise ValueError(
            "NiN trains on the TensorFlow, JAX and PyTorch backends. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    return importlib.import_module(f"ninlayers._steps.{_MODULES[backend]}")
