"""The NiN trunk: block specs, named architectures and `NiNBackbone`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from ninlayers import _checks, presets, runtime, saving
from ninlayers import _tf_feeding as feeding
from ninlayers._utils import follow_rename, inference_weights
from ninlayers.layers import MaxPooling2D, NiNBlock

__all__ = [
    "ARCHITECTURES",
    "BlockSpec",
    "DEFAULT_INPUT_SHAPE",
    "NiNBackbone",
    "minimum_input_size",
]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One stage of the NiN trunk: a `NiNBlock`, max pooling, dropout.

    Args:
        filters: int. Channels of the block.
        kernel_size: int. Size of the block's first convolution.
        strides: int. Strides of the block's first convolution. Defaults to 1.
        padding: str. Padding of the block's first convolution.
            Defaults to `"same"`.
        pool_size: int or `None`. Max pooling window after the block (valid
            padding); `None` for no pooling. Defaults to `3`.
        pool_strides: int. Strides of the pooling. Defaults to `2`.
        dropout: float. Dropout rate after the pooling. Defaults to `0.0`.

    Example:

    >>> BlockSpec(96, 11, strides=4, padding="valid").to_config()["strides"]
    4
    """

    filters: int
    kernel_size: int
    strides: int = 1
    padding: str = "same"
    pool_size: int | None = 3
    pool_strides: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _checks.positive_int("filters", self.filters)
        _checks.positive_int("kernel_size", self.kernel_size)
        _checks.positive_int("strides", self.strides)
        # Stored in lower case: "VALID" must count as "valid" everywhere.
        object.__setattr__(self, "padding", _checks.padding(self.padding))
        if self.pool_size is not None:
            _checks.positive_int("pool_size", self.pool_size)
        _checks.positive_int("pool_strides", self.pool_strides)
        _checks.fraction("dropout", self.dropout)

    def to_config(self) -> dict[str, Any]:
        """Returns the spec as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Any) -> BlockSpec:
        """Builds a spec from a `BlockSpec`, a dict of its fields or a tuple.

        Raises:
            ValueError: if the spec is malformed.
        """
        if isinstance(config, BlockSpec):
            return config
        fields = [f.name for f in dataclasses.fields(cls)]
        if isinstance(config, Mapping):
            unknown = set(config) - set(fields)
            if unknown:
                raise ValueError(
                    f"Unknown block spec keys {sorted(unknown)}; expected "
                    f"{fields}. Received: {dict(config)!r}"
                )
            if "filters" not in config or "kernel_size" not in config:
                raise ValueError(
                    "A block spec needs at least `filters` and `kernel_size`. "
                    f"Received: {dict(config)!r}"
                )
            return cls(**config)
        if isinstance(config, (list, tuple)) and 2 <= len(config) <= 7:
            return cls(*config)
        raise ValueError(
            "A block spec must be a BlockSpec, a dict of its fields or a tuple "
            f"(filters, kernel_size, ...). Received: {config!r}"
        )


#: Named architectures: the trunk's stages and its default input shape.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # The classic 28x28 NiN (96-256-384, 3x3 blocks, three 3x3/2 poolings):
    # 1,594,882 parameters with batch norm and 10 classes.
    "nin_28": {
        "blocks": (BlockSpec(96, 3), BlockSpec(256, 3), BlockSpec(384, 3)),
        "input_shape": (28, 28, 1),
    },
    # The same without the last pooling: the head sees 6x6 maps of 28x28
    # images (2x2 with it), so class maps show where. The `fashion_mnist`
    # preset's trunk.
    "nin_28_6x6": {
        "blocks": (
            BlockSpec(96, 3),
            BlockSpec(256, 3),
            BlockSpec(384, 3, pool_size=None),
        ),
        "input_shape": (28, 28, 1),
    },
    # Half the widths (48-128-192), about a quarter of the multiply-adds:
    # the `fashion_mnist_narrow` preset's and the quick recipe's trunk.
    "nin_28_narrow": {
        "blocks": (
            BlockSpec(48, 3),
            BlockSpec(128, 3),
            BlockSpec(192, 3, pool_size=None),
        ),
        "input_shape": (28, 28, 1),
    },
    # The paper's ImageNet-style network, as in d2l's NiN chapter.
    "nin_224": {
        "blocks": (
            BlockSpec(96, 11, strides=4, padding="valid"),
            BlockSpec(256, 5),
            BlockSpec(384, 3, dropout=0.5),
        ),
        "input_shape": (224, 224, 3),
    },
    # The tutorial's 224x224 RGB network: the same stages, with dropout 0.5
    # after the first two.
    "tutorial_224": {
        "blocks": (
            BlockSpec(96, 11, strides=4, padding="valid", dropout=0.5),
            BlockSpec(256, 5, dropout=0.5),
            BlockSpec(384, 3),
        ),
        "input_shape": (224, 224, 3),
    },
}

#: Earlier names of the architectures, accepted with a warning until 0.4.0.
RENAMED_ARCHITECTURES = {
    "fashion_mnist": "nin_28",
    "fashion_mnist_6x6": "nin_28_6x6",
    "fashion_mnist_narrow": "nin_28_narrow",
    "imagenet": "nin_224",
    "seed_imagenet": "tutorial_224",
}

#: The input shape of a trunk built from block specs without one.
DEFAULT_INPUT_SHAPE = ARCHITECTURES["nin_28"]["input_shape"]


def architecture_name(name: str, warn: bool = True) -> str:
    """The current name of an architecture, following a rename.

    >>> architecture_name("nin_28"), architecture_name("imagenet", warn=False)
    ('nin_28', 'nin_224')
    """
    return follow_rename("Architecture", name, RENAMED_ARCHITECTURES, warn)


def resolve_blocks(architecture: str | Sequence[Any]) -> tuple[BlockSpec, ...]:
    """The stages of a named architecture or of a list of block specs.

    Raises:
        ValueError: for an unknown name or a malformed spec.
    """
    if isinstance(architecture, str):
        name = architecture_name(architecture, warn=False)
        if name not in ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {sorted(ARCHITECTURES)} or a "
                f"list of block specs. Received: architecture={architecture!r}"
            )
        return ARCHITECTURES[name]["blocks"]
    if not isinstance(architecture, Sequence) or not architecture:
        raise ValueError(
            "`architecture` must be a non-empty list of block specs or one of "
            f"{sorted(ARCHITECTURES)}. Received: architecture={architecture!r}"
        )
    return tuple(BlockSpec.from_config(spec) for spec in architecture)


def default_input_shape(architecture: str | Sequence[Any]) -> tuple[int, ...]:
    """A named architecture's input shape, else `DEFAULT_INPUT_SHAPE`."""
    if isinstance(architecture, str):
        name = architecture_name(architecture, warn=False)
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]["input_shape"]
    return DEFAULT_INPUT_SHAPE


def minimum_input_size(architecture: str | Sequence[Any] = "nin_28") -> int:
    """Returns the smallest height (and width) the architecture accepts.

    Works backwards from a 1x1 class map through every convolution and
    pooling: a valid window of size `k` and stride `s` needs `(n - 1) * s + k`
    inputs to give `n` outputs, a "same" convolution `(n - 1) * s + 1`.

    Args:
        architecture: str or list of block specs. Defaults to `"nin_28"`.

    Returns:
        int.

    Example:

    >>> minimum_input_size("nin_28")
    15
    >>> minimum_input_size("nin_224")
    67
    """
    size = 1  # The head's "same" convolution keeps the size: 1 pixel.
    for spec in reversed(resolve_blocks(architecture)):
        if spec.pool_size is not None:
            size = (size - 1) * spec.pool_strides + spec.pool_size
        if spec.padding == "valid":
            size = (size - 1) * spec.strides + spec.kernel_size
        else:
            size = (size - 1) * spec.strides + 1
    return size


def check_image_size(shape: Sequence[Any], minimum: int, owner: str = "NiN") -> None:
    """Refuses a batch shape that is not rank 4 or smaller than `minimum`."""
    if len(shape) != 4:
        raise ValueError(
            f"{owner} expects images of rank 4 (batch, height, width, "
            f"channels). Received: input shape {tuple(shape)}"
        )
    for size in shape[1:3]:
        if size is not None and size < minimum:
            raise ValueError(
                f"{owner}'s architecture needs inputs of at least "
                f"{minimum}x{minimum} pixels: smaller ones vanish in its "
                "convolutions and 3x3/2 max pooling before reaching the head. "
                f"Received: input shape {tuple(shape)}"
            )


@keras.saving.register_keras_serializable(package="ninlayers")
class NiNBackbone(keras.Model):
    """The NiN trunk: `NiNBlock` stages, each with max pooling and dropout.

    A functional model from images to the last stage's feature map, at any
    input size from `minimum_input_size` up (`image_shape` may leave height
    and width `None`). `stage_outputs` holds every stage's output for
    models that tap earlier stages (keras-hub's `pyramid_outputs`). Its
    variables sit where `NiN`'s trunk keeps them, so a classifier's weights
    file loads into the backbone alone.

    Args:
        architecture: str or list of `BlockSpec` (or dicts of their fields).
            One of `ARCHITECTURES` or the trunk's stages. Defaults to
            `"nin_28"`.
        image_shape: tuple of 3 ints (height and width may be `None`) or
            `None` for the architecture's: `(28, 28, 1)` for the 28x28 ones,
            `(224, 224, 3)` for the 224x224 ones. Channels last. Defaults to
            `None`.
        num_mlp_layers: int. 1x1 convolutions per block. Defaults to `2`.
        activation: str. Activation in every block. Defaults to `"relu"`.
        use_batch_norm: bool. Batch norm after every convolution
            (`FusedBatchNormalization`). Defaults to `True`.
        batch_norm_momentum: float. Momentum of the moving statistics.
            Defaults to `0.9`.
        dtype: str, dtype policy or `None` (Keras's global policy).
        name: str. Defaults to `"nin_backbone"`.
        trainable: bool. `False` freezes every layer. Defaults to `True`.
        **kwargs: Other base model arguments.

    Example:

    >>> import keras, numpy as np
    >>> backbone = NiNBackbone(image_shape=(None, None, 1))
    >>> tuple(backbone(np.zeros((2, 64, 64, 1), "float32")).shape)
    (2, 7, 7, 384)
    >>> sorted(backbone.stage_outputs)
    ['stage1', 'stage2', 'stage3']
    >>> taps = keras.Model(backbone.input, backbone.stage_outputs)
    >>> tuple(taps(np.zeros((1, 28, 28, 1), "float32"))["stage1"].shape)
    (1, 13, 13, 96)
    """

    def __init__(
        self,
        architecture: str | Sequence[Any] = "nin_28",
        image_shape: Sequence[int | None] | None = None,
        num_mlp_layers: int = 2,
        activation: str = "relu",
        use_batch_norm: bool = True,
        batch_norm_momentum: float = 0.9,
        dtype: Any = None,
        name: str = "nin_backbone",
        trainable: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(architecture, str):
            architecture = architecture_name(architecture)
        blocks = resolve_blocks(architecture)
        if image_shape is None:
            image_shape = default_input_shape(architecture)
        image_shape = _check_image_shape(image_shape, blocks)
        policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        shared = {
            "num_mlp_layers": _checks.positive_int("num_mlp_layers", num_mlp_layers),
            "activation": activation,
            "use_batch_norm": _checks.boolean("use_batch_norm", use_batch_norm),
            "batch_norm_momentum": _checks.fraction(
                "batch_norm_momentum", batch_norm_momentum
            ),
            "data_format": "channels_last",
            "dtype": policy,
        }

        # === Functional model ===
        inputs = keras.Input(shape=image_shape, name="images")
        x, stage_outputs = inputs, {}
        for index, spec in enumerate(blocks):
            for layer in _stage_layers(index, spec, shared):
                x = layer(x)
            stage_outputs[f"stage{index + 1}"] = x
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)
        self.dtype_policy = policy  # functional models ignore `dtype`
        # Through the setter, which reaches every layer: a frozen trunk
        # loads frozen (the constructor's argument alone would not).
        self.trainable = _checks.boolean("trainable", trainable)

        # === Config ===
        self.architecture = (
            architecture
            if isinstance(architecture, str)
            else [spec.to_config() for spec in blocks]
        )
        self.image_shape = image_shape
        self.num_mlp_layers = shared["num_mlp_layers"]
        self.activation = activation
        self.use_batch_norm = shared["use_batch_norm"]
        self.batch_norm_momentum = shared["batch_norm_momentum"]
        self.stage_outputs = stage_outputs
        self.minimum_input_size = minimum_input_size(blocks)

    def call(self, inputs, training=None, mask=None):
        check_image_size(inputs.shape, self.minimum_input_size, "NiNBackbone")
        return super().call(inputs, training=training, mask=mask)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.predict`; on PyTorch each weight is converted once
        per call; on PyTorch and TensorFlow batch norm is folded into the
        convolutions; on TensorFlow arrays are read without `tf.data`'s
        autotuning, in batches of `runtime.PREDICT_BATCH_PIXELS` where none
        is given, several per call of the graph, as a classifier's `predict`
        does."""
        arguments = feeding.predict_arguments(self, x, args, kwargs)
        with inference_weights(self), arguments as (x, args, kwargs):
            return super().predict(x, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "architecture": self.architecture,
            "image_shape": list(self.image_shape),
            "num_mlp_layers": self.num_mlp_layers,
            "activation": self.activation,
            "use_batch_norm": self.use_batch_norm,
            "batch_norm_momentum": self.batch_norm_momentum,
            # The resolved policy: a saved trunk computes the same everywhere.
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NiNBackbone:
        config = dict(config)
        if isinstance(config.get("architecture"), str):
            config["architecture"] = architecture_name(config["architecture"], False)
        return cls(**config)

    @classmethod
    def from_preset(
        cls, preset: str | os.PathLike, load_weights: bool = True, **kwargs: Any
    ) -> NiNBackbone:
        """The trunk of a preset, with its pretrained weights, or of a file.

        Args:
            preset: str or path. A name in `ninlayers.presets.PRESETS`, or a
                `.keras` file holding a backbone or a classifier.
            load_weights: bool. Load a pretrained preset's weights.
                Defaults to `True`.
            **kwargs: `NiNBackbone` arguments overriding the preset's (for
                example `image_shape=(None, None, 1)`, or `dtype`, which is
                this machine's fastest safe precision by default).

        Example:

        >>> NiNBackbone.from_preset("fashion_mnist").output_shape
        (None, 6, 6, 384)
        """
        if not presets.is_preset(preset):
            model = saving.load_model(presets.model_file(preset))
            return model if isinstance(model, NiNBackbone) else model.backbone
        kwargs.setdefault(
            "dtype", runtime.resolve_precision(kwargs.pop("precision", "auto"))
        )
        backbone = cls(**{**presets.get(preset).backbone, **kwargs})
        if load_weights and presets.get(preset).weights is not None:
            backbone.load_weights(presets.weights_file(preset))
        return backbone


def _check_image_shape(shape: Any, blocks: Sequence[BlockSpec]) -> tuple:
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), with height and "
            f"width possibly None. Received: input_shape={shape!r}"
        )
    height, width, channels = shape
    for axis, size in (("height", height), ("width", width)):
        if size is not None:
            _checks.positive_int(f"input_shape {axis}", size)
    _checks.positive_int("input_shape channels", channels)
    check_image_size((None, height, width, channels), minimum_input_size(blocks))
    return (height, width, channels)


def _stage_layers(
    index: int, spec: BlockSpec, shared: dict[str, Any]
) -> list[keras.layers.Layer]:
    """The layers of one trunk stage: a `NiNBlock`, pooling, dropout."""
    policy = shared["dtype"]
    layers: list[keras.layers.Layer] = [
        NiNBlock(
            spec.filters,
            spec.kernel_size,
            strides=spec.strides,
            padding=spec.padding,
            name=f"block{index + 1}",
            **shared,
        )
    ]
    if spec.pool_size is not None:
        layers.append(
            MaxPooling2D(
                spec.pool_size,
                spec.pool_strides,
                data_format="channels_last",
                name=f"pool{index + 1}",
                dtype=policy,
            )
        )
    if spec.dropout:
        layers.append(
            keras.layers.Dropout(spec.dropout, name=f"dropout{index + 1}", dtype=policy)
        )
    return layers
