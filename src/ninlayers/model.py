"""`NiN`: the one-call model, today's arguments mapped onto the three pieces."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import keras

from ninlayers import _checks, pixels, runtime
from ninlayers.backbone import (
    ARCHITECTURES,
    DEFAULT_INPUT_SHAPE,
    BlockSpec,
    NiNBackbone,
    architecture_name,
    minimum_input_size,
)
from ninlayers.classifier import NiNImageClassifier
from ninlayers.image_converter import NiNImageConverter

__all__ = ["ARCHITECTURES", "DEFAULT_INPUT_SHAPE", "BlockSpec", "NiN"]
__all__ += ["minimum_input_size"]


@keras.saving.register_keras_serializable(package="ninlayers")
class NiN(NiNImageClassifier):
    """Network in Network in one call: a `NiNImageClassifier` built from
    flat arguments (a `NiNBackbone`, a `NiNImageConverter`, the head). The
    default, the classic 28x28 NiN (96-256-384) with batch norm and linear
    class maps, trains with `compile()`'s defaults.

    Args:
        num_classes: int. Number of classes. Defaults to `10`.
        input_shape: `(height, width, channels)`, spatial sizes may be `None`;
            `None` for the architecture's. Defaults to `None`.
        architecture: str or list of `BlockSpec`. See `NiNBackbone`.
            Defaults to `"nin_28"`.
        head_kernel_size: int. Defaults to `3`.
        num_mlp_layers: int. 1x1 convolutions per block. Defaults to `2`.
        activation: str. Defaults to `"relu"`.
        use_batch_norm: bool. Defaults to `True`.
        batch_norm_momentum: float. Defaults to `0.9`.
        head_final_activation: bool. Defaults to `False`.
        include_head: bool. Deprecated: `False` returns a `NiNBackbone`.
        output_activation: str or `None`. Defaults to `"softmax"`.
        gradient_clip_norm: float or `None`. Defaults to `None`.
        precision: str. `"auto"` (this machine's fastest safe choice, see
            `ninlayers.runtime.resolve_precision`), `"float32"`,
            `"mixed_bfloat16"` or `"mixed_float16"`; a `dtype` overrides it.
            The config keeps the resolved policy. Defaults to `"auto"`.
        class_names: list of str or `None`. Defaults to `None`.
        test_time_flip: bool. Defaults to `False`.
        input_range: pair of floats onto which integer pixels are mapped.
            Defaults to `(0.0, 1.0)`.
        check_input_range: bool. Refuse NumPy floats far outside
            `input_range` (0-255 floats given to a 0-1 model). Defaults to
            `False`: any floats, standardised ones included, are taken.
        test_time_shift: int. Defaults to `0` (see `NiNImageClassifier`).
        name: str. Defaults to `"nin"`. **kwargs: `dtype`, `trainable`.

    Example:

    >>> NiN().count_params(), NiN().output_shape
    (1594882, (None, 10))
    >>> NiN(use_batch_norm=False, head_final_activation=True).count_params()
    1588198

    References:
        Lin, Chen and Yan, "Network In Network", ICLR 2014 (arXiv:1312.4400).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Deprecated: NiN(include_head=False) stands for the trunk alone.
        return _headless(cls, args, kwargs) or super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int | None] | None = None,
        architecture: str | Sequence[Any] = "nin_28",
        head_kernel_size: int = 3,
        num_mlp_layers: int = 2,
        activation: str = "relu",
        use_batch_norm: bool = True,
        batch_norm_momentum: float = 0.9,
        head_final_activation: bool = False,
        include_head: bool = True,
        output_activation: str | None = "softmax",
        gradient_clip_norm: float | None = None,
        precision: str = "auto",
        class_names: Sequence[str] | None = None,
        test_time_flip: bool = False,
        input_range: Sequence[float] = pixels.DEFAULT_INPUT_RANGE,
        check_input_range: bool = False,
        test_time_shift: int = 0,
        name: str = "nin",
        **kwargs: Any,
    ) -> None:
        _check_unknown_arguments(kwargs)
        _checks.boolean("include_head", include_head)
        policy = keras.dtype_policies.get(
            kwargs.pop("dtype", None) or runtime.resolve_precision(precision)
        )
        backbone = NiNBackbone(
            architecture,
            input_shape,
            num_mlp_layers,
            activation,
            use_batch_norm,
            batch_norm_momentum,
            dtype=policy,
            name=f"{name}_backbone",
        )
        converter = NiNImageConverter(
            input_range, check_range=check_input_range, name="pixels", dtype="float32"
        )
        super().__init__(
            backbone,
            num_classes,
            converter,
            head_kernel_size,
            head_final_activation,
            output_activation,
            class_names,
            test_time_flip,
            gradient_clip_norm,
            test_time_shift,
            name=name,
            **kwargs,
        )
        self.precision = precision

    architecture = property(lambda self: self.backbone.architecture)
    input_range = property(lambda self: self.preprocessor.input_range)

    def get_config(self) -> dict[str, Any]:
        # The classifier's own options, with its pieces as flat arguments.
        config = super().get_config()
        del config["backbone"], config["preprocessor"]
        trunk, pixels_ = self.backbone, self.preprocessor
        return {
            **config,
            "input_shape": list(trunk.image_shape),
            "architecture": trunk.architecture,
            "num_mlp_layers": trunk.num_mlp_layers,
            "activation": trunk.activation,
            "use_batch_norm": trunk.use_batch_norm,
            "batch_norm_momentum": trunk.batch_norm_momentum,
            "precision": self.precision,
            "input_range": list(pixels_.input_range),
            "check_input_range": pixels_.check_range,
            # The resolved policy: "auto" alone would compute in another
            # precision on another machine.
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NiN:
        # Files from before `batch_norm_momentum` was an argument used 0.99.
        config = {"batch_norm_momentum": 0.99, **config}
        if isinstance(config.get("architecture"), str):
            config["architecture"] = architecture_name(config["architecture"], False)
        return cls(**config)

    def forward_features(self, images, training: bool | None = None):
        """Deprecated (goes in 0.4.0): `model.backbone(images)`."""
        warnings.warn("Use model.backbone(images).", DeprecationWarning, stacklevel=2)
        return self.backbone(images, training=training)

    def forward_head(self, features, training: bool | None = None):
        """Deprecated (goes in 0.4.0): `model.head(features)`."""
        warnings.warn("Use model.head(features).", DeprecationWarning, stacklevel=2)
        return self.head(features, training=training)


def _headless(cls: type, args: tuple, kwargs: dict[str, Any]) -> NiNBackbone | None:
    """The `NiNBackbone` that `NiN(include_head=False, ...)` stands for, with
    a warning; `None` for a NiN with its head."""
    bound = inspect.signature(cls.__init__).bind_partial(None, *args, **kwargs)
    arguments = dict(bound.arguments)
    if arguments.get("include_head", True) is not False:
        return None
    warnings.warn(
        "NiN(include_head=False) is deprecated: use NiNBackbone(...), the "
        "trunk alone. It goes in 0.4.0.",
        DeprecationWarning,
        stacklevel=3,
    )
    arguments.pop("self")
    return _backbone(**arguments, **arguments.pop("kwargs", {}))


def _backbone(**arguments: Any) -> NiNBackbone:
    """The trunk of a NiN with these arguments."""
    dtype = arguments.get("dtype") or runtime.resolve_precision(
        arguments.get("precision", "auto")
    )
    for option in ("test_time_flip", "test_time_shift"):
        if arguments.get(option):
            raise ValueError(
                f"`{option}` averages class predictions and needs the head. "
                f"Received: {option}={arguments[option]!r} with include_head=False"
            )
    return NiNBackbone(
        arguments.get("architecture", "nin_28"),
        arguments.get("input_shape"),
        arguments.get("num_mlp_layers", 2),
        arguments.get("activation", "relu"),
        arguments.get("use_batch_norm", True),
        arguments.get("batch_norm_momentum", 0.9),
        dtype=dtype,
        name=arguments.get("name", "nin"),
    )


# Base-model arguments NiN passes on to `keras.Model` (from_config adds them).
_MODEL_KWARGS = ("dtype", "trainable")


def _check_unknown_arguments(kwargs: dict[str, Any]) -> None:
    """Refuses a misspelled argument, which `keras.Model` would ignore."""
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS))
    if unknown:
        known = list(inspect.signature(NiN.__init__).parameters)[1:-1]
        raise ValueError(
            f"NiN got unknown argument(s) {unknown}; expected "
            f"{', '.join(known + list(_MODEL_KWARGS))}. "
            f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}"
        )
