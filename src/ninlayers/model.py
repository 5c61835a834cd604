"""The NiN model: architecture specs, the network, and its training step."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from ninlayers import _checks, _keras_compat, _steps, pixels, runtime
from ninlayers.layers import NiNBlock, NiNClassifierHead

__all__ = ["ARCHITECTURES", "BlockSpec", "NiN", "minimum_input_size"]


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
        if isinstance(config, Mapping):
            unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(
                    f"Unknown block spec keys {sorted(unknown)}; expected "
                    f"{[f.name for f in dataclasses.fields(cls)]}. "
                    f"Received: {dict(config)!r}"
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


#: Named architectures: the trunk's stages and the default input shape.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # The classic Fashion-MNIST NiN (96-256-384): 1,588,198 parameters with
    # 10 classes.
    "fashion_mnist": {
        "blocks": (BlockSpec(96, 3), BlockSpec(256, 3), BlockSpec(384, 3)),
        "input_shape": (28, 28, 1),
    },
    # The paper's ImageNet-style network, as in d2l's NiN chapter.
    "imagenet": {
        "blocks": (
            BlockSpec(96, 11, strides=4, padding="valid"),
            BlockSpec(256, 5),
            BlockSpec(384, 3, dropout=0.5),
        ),
        "input_shape": (224, 224, 3),
    },
    # The seed tutorial's 224x224 RGB network: the same stages, with dropout
    # 0.5 after the first two (2,015,398 parameters with 10 classes in the
    # paper's form, no batch norm).
    "seed_imagenet": {
        "blocks": (
            BlockSpec(96, 11, strides=4, padding="valid", dropout=0.5),
            BlockSpec(256, 5, dropout=0.5),
            BlockSpec(384, 3),
        ),
        "input_shape": (224, 224, 3),
    },
    # The default trunk without the last pooling: the head sees 6x6 maps of
    # 28x28 images (2x2 with it), so class maps show where (docs/recipes.md).
    "fashion_mnist_6x6": {
        "blocks": (
            BlockSpec(96, 3),
            BlockSpec(256, 3),
            BlockSpec(384, 3, pool_size=None),
        ),
        "input_shape": (28, 28, 1),
    },
    # Half the widths (48-128-192), about a quarter of the multiply-adds:
    # the "quick" recipe's network (docs/recipes.md).
    "fashion_mnist_narrow": {
        "blocks": (
            BlockSpec(48, 3),
            BlockSpec(128, 3),
            BlockSpec(192, 3, pool_size=None),
        ),
        "input_shape": (28, 28, 1),
    },
}

#: The input shape of a NiN built from a list of block specs without one.
DEFAULT_INPUT_SHAPE = ARCHITECTURES["fashion_mnist"]["input_shape"]


def _resolve_blocks(architecture: str | Sequence[Any]) -> tuple[BlockSpec, ...]:
    if isinstance(architecture, str):
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {sorted(ARCHITECTURES)} or a "
                f"list of block specs. Received: architecture={architecture!r}"
            )
        return ARCHITECTURES[architecture]["blocks"]
    if not isinstance(architecture, Sequence) or not architecture:
        raise ValueError(
            "`architecture` must be a non-empty list of block specs or one of "
            f"{sorted(ARCHITECTURES)}. Received: architecture={architecture!r}"
        )
    return tuple(BlockSpec.from_config(spec) for spec in architecture)


def minimum_input_size(
    architecture: str | Sequence[Any] = "fashion_mnist",
) -> int:
    """Returns the smallest height (and width) the architecture accepts.

    Works backwards from a 1x1 class map through every convolution and
    pooling: a valid window of size `k` and stride `s` needs `(n - 1) * s + k`
    inputs to give `n` outputs, a "same" convolution `(n - 1) * s + 1`.

    Args:
        architecture: str or list of block specs. Defaults to
            `"fashion_mnist"`.

    Returns:
        int.

    Example:

    >>> minimum_input_size("fashion_mnist")
    15
    >>> minimum_input_size("imagenet")
    67
    """
    # The head's "same" convolution keeps the size: it needs 1 pixel.
    size = 1
    for spec in reversed(_resolve_blocks(architecture)):
        if spec.pool_size is not None:
            size = (size - 1) * spec.pool_strides + spec.pool_size
        if spec.padding == "valid":
            size = (size - 1) * spec.strides + spec.kernel_size
        else:
            size = (size - 1) * spec.strides + 1
    return size


@keras.saving.register_keras_serializable(package="ninlayers")
class NiN(keras.Model):
    """Network in Network: NiN blocks, max pooling, and a dense-free head.

    A functional Keras model built from `NiNBlock` stages (each followed by
    3x3/2 max pooling and optional dropout) and a `NiNClassifierHead` with
    `num_classes` channels, global average pooling and softmax. There are no
    dense layers, so the parameter count does not depend on the input size,
    and the head's class maps show where each class was seen.

    The default trunk is the classic Fashion-MNIST NiN (blocks of 96, 256
    and 384 filters, 3x3), with batch norm and linear class maps so that it
    trains on every seed with `compile()`'s defaults (1,594,882 parameters).
    The paper's form, without batch norm and with ReLU class maps (1,588,198
    parameters), is `NiN(use_batch_norm=False, head_final_activation=True)`
    or `NiN.from_preset("seed_fashion_mnist")`; `architecture="imagenet"`
    gives the paper's 224x224 network (11x11/4, 5x5, 3x3, dropout 0.5).

    Training uses an overridden `train_step` (optional clipping by global
    norm, a `gradient_norm` metric, correct losses under `tf.distribute`).
    `compile()` has defaults that train a classifier as is: Adam, sparse
    categorical cross-entropy, accuracy, and XLA where it is faster.

    Args:
        num_classes: int. Number of classes. Defaults to `10`.
        input_shape: tuple of 3 ints (spatial ones may be `None`) or `None`.
            `None` takes the architecture's shape: `(28, 28, 1)` for the
            default, `(224, 224, 3)` for `"imagenet"`, `DEFAULT_INPUT_SHAPE`
            for a list of block specs. Images are channels last,
            `(height, width, channels)`, whatever
            `keras.config.image_data_format()` says. Defaults to `None`.
        architecture: str or list of `BlockSpec` (or dicts of their fields).
            One of `ARCHITECTURES` or the trunk's stages. Defaults to
            `"fashion_mnist"`.
        head_kernel_size: int. Kernel size of the head's first convolution.
            Defaults to `3`.
        num_mlp_layers: int. 1x1 convolutions per block. Defaults to `2`.
        activation: str. Activation in every block. Defaults to `"relu"`.
        use_batch_norm: bool. Batch norm after every convolution
            (`FusedBatchNormalization`: TensorFlow's fused kernel on
            TensorFlow, Keras's batch norm elsewhere). Without it, a NiN
            trained with `compile()`'s defaults often does not learn at all
            (docs/defaults.md). Defaults to `True`.
        batch_norm_momentum: float. Momentum of the batch norms' moving
            statistics, which `predict` and `evaluate` use. `0.9` (PyTorch's
            default) makes them track the weights within tens of steps;
            Keras's `0.99` leaves a model trained for a few hundred steps
            predicting from stale statistics. Defaults to `0.9`.
        head_final_activation: bool. Whether the class maps pass through the
            activation, as in the paper. `False` makes the head's
            last 1x1 convolution a linear projection (logits that can be
            negative), which trains faster with batch norm and cannot start
            dead (all maps zero, no gradient). Defaults to `False`.
        include_head: bool. `False` gives the trunk alone, a feature extractor
            ending at the last stage's feature map. Defaults to `True`.
        output_activation: str or `None`. `"softmax"` or `None` for logits.
            Defaults to `"softmax"`.
        gradient_clip_norm: float or `None`. Clip gradients to this global
            norm in `train_step`. Unlike the optimizer's `global_clipnorm`,
            which under `tf.distribute` clips each replica's part, the norm is
            taken over the all-reduced gradient. Defaults to `None`.
        precision: str. `"auto"` (the fastest safe choice for this device, see
            `ninlayers.runtime.resolve_precision`), `"float32"`,
            `"mixed_bfloat16"` or `"mixed_float16"`. A `dtype` argument
            overrides it. The config (and so a `.keras` file) records the
            resolved dtype policy, so a saved model computes the same way on
            every machine. Defaults to `"auto"`.
        class_names: list of str or `None`. A name per class, kept in the
            config (and so in `.keras` files) for reading predictions.
            Defaults to `None`.
        test_time_flip: bool. At inference (`training=False`: `predict`,
            `evaluate`), average the outputs for each image and its mirror
            image (horizontal flip), at twice the inference cost. Training is
            unchanged. Defaults to `False`.
        input_range: pair of floats. The range of the float images the
            model computes on. Integer images (`uint8` 0-255, `uint16`
            0-65535) are mapped onto it inside the model, so raw pixels give
            the right answer; `predict` refuses NumPy float images far
            outside it (see `ninlayers.pixels`). Defaults to `(0.0, 1.0)`.
        name: str. Defaults to `"nin"`.
        **kwargs: Base model arguments (`dtype`, `trainable`).

    Example:

    >>> model = NiN()
    >>> model.count_params()
    1594882
    >>> model.output_shape
    (None, 10)
    >>> NiN(input_shape=(64, 64, 1)).count_params()
    1594882
    >>> NiN(use_batch_norm=False, head_final_activation=True).count_params()
    1588198

    References:
        Lin, Chen and Yan, "Network In Network", ICLR 2014 (arXiv:1312.4400).
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int | None] | None = None,
        architecture: str | Sequence[Any] = "fashion_mnist",
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
        name: str = "nin",
        **kwargs: Any,
    ) -> None:
        # === Arguments ===
        _check_unknown_arguments(kwargs)
        num_classes = _checks.positive_int("num_classes", num_classes)
        use_batch_norm, head_final_activation, include_head, test_time_flip = (
            _check_flags(
                use_batch_norm, head_final_activation, include_head, test_time_flip
            )
        )
        blocks = _resolve_blocks(architecture)
        head_kernel_size = _checks.positive_int("head_kernel_size", head_kernel_size)
        if input_shape is None:
            input_shape = _default_input_shape(architecture)
        input_shape = _check_input_shape(input_shape, blocks)
        class_names = _check_class_names(class_names, num_classes)
        input_range = _check_input_range(input_range)
        gradient_clip_norm = _check_clip_norm(gradient_clip_norm)
        explicit_dtype = kwargs.pop("dtype", None)
        policy = keras.dtype_policies.get(
            explicit_dtype or runtime.resolve_precision(precision)
        )

        # === Layers ===
        # Kept as locals: the functional graph tracks them, and `head` and
        # `forward_features` find them in it (no layer attribute is set
        # before `super().__init__`).
        shared = _block_options(
            num_mlp_layers, activation, use_batch_norm, batch_norm_momentum, policy
        )
        stages = [_stage_layers(i, spec, shared) for i, spec in enumerate(blocks)]
        head = None
        if include_head:
            head = NiNClassifierHead(
                num_classes,
                head_kernel_size,
                final_activation=head_final_activation,
                output_activation=output_activation,
                name="head",
                **shared,
            )

        # === Functional model ===
        inputs = keras.Input(shape=input_shape, name="images")
        x = inputs
        for stage in stages:
            for layer in stage:
                x = layer(x)
        outputs = head(x) if head is not None else x
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # Functional models ignore `dtype`; compile() reads the policy to add
        # loss scaling under mixed_float16.
        self.dtype_policy = policy

        # === Config ===
        self.num_classes = num_classes
        self.architecture = (
            architecture
            if isinstance(architecture, str)
            else [spec.to_config() for spec in blocks]
        )
        self.head_kernel_size = head_kernel_size
        self.num_mlp_layers = num_mlp_layers
        self.activation = activation
        self.use_batch_norm = bool(use_batch_norm)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.head_final_activation = bool(head_final_activation)
        self.include_head = bool(include_head)
        self.output_activation = output_activation
        self.gradient_clip_norm = gradient_clip_norm
        self.test_time_flip = bool(test_time_flip)
        self.precision = precision
        self.class_names = class_names
        self.input_range = input_range
        self.minimum_input_size = minimum_input_size(blocks)
        self.gradient_norm_tracker = keras.metrics.Mean(name="gradient_norm")

    # --- Features and head, as timm splits them ---

    @property
    def head(self) -> NiNClassifierHead | None:
        """The `NiNClassifierHead`, or `None` with `include_head=False`."""
        return self.get_layer("head") if self.include_head else None

    def forward_features(self, images, training: bool | None = None):
        """Runs the trunk: the model's own graph up to the head's input.

        Args:
            images: 4D tensor of images.
            training: bool or `None`. Training mode (dropout, batch norm).

        Returns:
            4D tensor, the feature map the head classifies.
        """
        _check_spatial_size(images.shape, self.minimum_input_size)
        features = self.head.input if self.include_head else self.outputs[0]
        return keras.Model(self.input, features)(images, training=training)

    def forward_head(self, features, training: bool | None = None):
        """Runs the head on a feature map from `forward_features`.

        Returns:
            2D tensor of class probabilities (or logits).

        Raises:
            ValueError: if the model was built with `include_head=False`.
        """
        if self.head is None:
            raise ValueError(
                "This NiN was built with include_head=False and has no head. "
                "Received: include_head=False"
            )
        return self.head(features, training=training)

    # --- Training ---

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        loss: Any = "auto",
        metrics: Any = "auto",
        jit_compile: bool | str = "auto",
        **kwargs: Any,
    ) -> None:
        """Configures training, with defaults that train the classifier.

        Args:
            optimizer: str or optimizer. Defaults to `"adam"`.
            loss: loss or `"auto"`: sparse categorical cross-entropy, from
                logits when `output_activation` is `None`.
            metrics: list or `"auto"`: `["accuracy"]`.
            jit_compile: bool or `"auto"`: XLA on where a GPU is visible, off
                on CPU (see `ninlayers.runtime.resolve_jit_compile`).
            **kwargs: Other arguments of `keras.Model.compile`.
        """
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=self.output_activation is None
            )
        if metrics == "auto":
            metrics = ["accuracy"]
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            jit_compile=runtime.resolve_jit_compile(jit_compile),
            **kwargs,
        )

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles the model from a saved compile config (when loading)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args):
        """One training step: forward, loss, gradients, clipping, update.

        The same contract on every backend (`ninlayers._steps`): the loss is
        logged as Keras logs it (under `tf.distribute`, the true mean over
        the global batch), the compiled metrics, and `gradient_norm`, the
        global norm of the gradients before clipping to
        `gradient_clip_norm`. Takes `(data)` on TensorFlow and PyTorch and
        the stateless `(state, data)` on JAX, as Keras's trainers call it.
        """
        return _steps.for_backend().train_step(self, *args)

    def test_step(self, *args):
        return _steps.for_backend().test_step(self, *args)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds metrics and optimizer from one replica's first batch.

        Keras 3 (TensorFlow backend) learns the batch's shapes by reducing a
        distributed batch with `strategy.reduce("MEAN", ...)`.
        `MultiWorkerMirroredStrategy` refuses to reduce a nested structure
        (`Attempt to convert a value (PerReplica...) to a Tensor`), so under
        it `fit` and `evaluate` failed before the first step. The shapes are
        those of any one replica's batch: take the first local one.
        """
        strategy = _keras_compat.trainer_strategy(self)
        if iterator is not None and strategy is not None:
            data_batch = _keras_compat.first_local_batch(iterator, strategy)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # --- Checks and config ---

    def call(self, inputs, training=None, mask=None):
        _check_spatial_size(inputs.shape, self.minimum_input_size)
        inputs = pixels.to_input_range(inputs, self.input_range)
        outputs = super().call(inputs, training=training, mask=mask)
        if self.test_time_flip and not training:
            mirrored = super().call(
                keras.ops.flip(inputs, axis=2), training=training, mask=mask
            )
            outputs = (outputs + mirrored) / 2
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape[1:]),
            "architecture": self.architecture,
            "head_kernel_size": self.head_kernel_size,
            "num_mlp_layers": self.num_mlp_layers,
            "activation": self.activation,
            "use_batch_norm": self.use_batch_norm,
            "batch_norm_momentum": self.batch_norm_momentum,
            "head_final_activation": self.head_final_activation,
            "include_head": self.include_head,
            "output_activation": self.output_activation,
            "gradient_clip_norm": self.gradient_clip_norm,
            "test_time_flip": self.test_time_flip,
            "precision": self.precision,
            "class_names": self.class_names,
            "input_range": list(self.input_range),
            # The resolved policy, always: "auto" alone would compute in
            # another precision on another machine.
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NiN:
        # Files from before `batch_norm_momentum` was an argument used 0.99.
        return cls(**{"batch_norm_momentum": 0.99, **config})

    @classmethod
    def from_preset(
        cls, preset: str | os.PathLike, load_weights: bool = True, **kwargs: Any
    ) -> keras.Model:
        """A named NiN (pretrained ones with their weights), a `.keras` file,
        or a run's directory; see `ninlayers.presets.from_preset`.

        Example:

        >>> model = NiN.from_preset("fashion_mnist", load_weights=False)
        >>> model.class_names[0]
        'T-shirt/top'
        """
        from ninlayers import presets

        return presets.from_preset(preset, load_weights=load_weights, **kwargs)

    # NumPy images are mapped onto `input_range` before Keras converts them
    # (PyTorch has no uint16 tensors: Keras would pass them on as int32).

    def _numpy_images(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            pixels.check_float_range(x, self.input_range)
            return pixels.to_input_range(x, self.input_range)
        return x

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(self._numpy_images(inputs), *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.predict`; integer images are mapped onto
        `input_range`, NumPy float images far outside it are refused."""
        return super().predict(self._numpy_images(x), *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, taking images as `predict` does."""
        return super().evaluate(self._numpy_images(x), *args, **kwargs)

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, taking images as `predict` does."""
        return super().fit(self._numpy_images(x), *args, **kwargs)

    # --- Export ---

    def export(
        self,
        filepath: str | os.PathLike,
        format: str = "tf_saved_model",
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs: Any,
    ) -> Any:
        """`keras.Model.export`, from the model's float32 copy.

        Whatever the dtype policy (`precision="auto"` picks `mixed_bfloat16`
        on CPUs with bfloat16), the exported graph computes in float32 with
        the same weights, so every format and runtime can load it:
        `"tf_saved_model"`, `"onnx"`, `"litert"` (builtin operators only).
        `ninlayers.export.export` adds int8 and ninlayers' metadata.

        On JAX, Keras exports `"tf_saved_model"` (and `"onnx"` with
        `jax2onnx` installed); on PyTorch, `"onnx"` (and `"litert"` with
        `litert-torch`). A format the backend cannot export raises one line
        saying so.

        Raises:
            ValueError: if Keras cannot export this format on this backend.
            ImportError: if the format needs a package that is missing.

        Example:

        >>> import tempfile
        >>> NiN().export(f"{tempfile.mkdtemp()}/nin.tflite", format="litert",
        ...              verbose=False)
        """
        from ninlayers import export

        try:
            return keras.Model.export(
                export.float32_copy(self),
                filepath,
                format=format,
                verbose=verbose,
                input_signature=input_signature,
                **kwargs,
            )
        except Exception as error:
            if not _torch_saved_model_failure(format, error):
                raise
            raise ValueError(
                "Keras cannot export a SavedModel from the PyTorch backend "
                "(torch.export rejects the input shapes Keras gives it). Use "
                'format="onnx", or save the model (`model.save("m.keras")`) '
                "and export it under TensorFlow: `KERAS_BACKEND=tensorflow "
                'ninlayers export m.keras out`. Received: format="tf_saved_model"'
            ) from error


def _torch_saved_model_failure(format: str, error: Exception) -> bool:
    """Whether `error` is Keras's SavedModel export failing on PyTorch."""
    return (
        keras.backend.backend() == "torch"
        and format == "tf_saved_model"
        and "dynamic_shapes" in str(error)
    )


# Base-model arguments NiN passes on to `keras.Model` (from_config adds them).
_MODEL_KWARGS = ("dtype", "trainable")


def _check_unknown_arguments(kwargs: dict[str, Any]) -> None:
    """Refuses a misspelled argument, which `keras.Model` would ignore."""
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS))
    if unknown:
        import inspect

        known = [p for p in inspect.signature(NiN.__init__).parameters][1:-1]
        raise ValueError(
            f"NiN got unknown argument(s) {unknown}; expected "
            f"{', '.join(known + list(_MODEL_KWARGS))}. "
            f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}"
        )


def _check_flags(
    use_batch_norm: Any,
    head_final_activation: Any,
    include_head: Any,
    test_time_flip: Any,
) -> tuple[bool, bool, bool, bool]:
    """NiN's four switches as booleans, or a clear refusal."""
    flags = (
        _checks.boolean("use_batch_norm", use_batch_norm),
        _checks.boolean("head_final_activation", head_final_activation),
        _checks.boolean("include_head", include_head),
        _checks.boolean("test_time_flip", test_time_flip),
    )
    if flags[3] and not flags[2]:
        raise ValueError(
            "`test_time_flip` averages class predictions and needs the "
            "head. Received: test_time_flip=True with include_head=False"
        )
    return flags


def _default_input_shape(architecture: str | Sequence[Any]) -> tuple[int, ...]:
    """A named architecture's input shape, else `DEFAULT_INPUT_SHAPE`."""
    if isinstance(architecture, str) and architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]["input_shape"]
    return DEFAULT_INPUT_SHAPE


def _check_class_names(
    class_names: Sequence[str] | None, num_classes: int
) -> list[str] | None:
    if class_names is None:
        return None
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must have one name per class ({num_classes}). "
            f"Received: class_names={class_names!r}"
        )
    return class_names


def _check_clip_norm(norm: Any) -> float | None:
    return None if norm is None else _checks.positive_number("gradient_clip_norm", norm)


def _check_input_range(input_range: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in input_range)
        valid = not isinstance(input_range, str) and low < high
        valid = valid and bool(np.isfinite([low, high]).all())
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise ValueError(
            "`input_range` must be two finite floats (low, high) with low < "
            f"high. Received: input_range={input_range!r}"
        )
    return (low, high)


def _check_input_shape(
    input_shape: Any, blocks: Sequence[BlockSpec]
) -> tuple[int | None, ...]:
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), with height and "
            f"width possibly None. Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    for axis, size in (("height", height), ("width", width)):
        if size is not None:
            _checks.positive_int(f"input_shape {axis}", size)
    _checks.positive_int("input_shape channels", channels)
    _check_spatial_size((None, height, width, channels), minimum_input_size(blocks))
    return (height, width, channels)


def _check_spatial_size(shape: Sequence[Any], minimum: int) -> None:
    if len(shape) != 4:
        raise ValueError(
            "NiN expects images of rank 4 (batch, height, width, channels). "
            f"Received: input shape {tuple(shape)}"
        )
    for size in shape[1:3]:
        if size is not None and size < minimum:
            raise ValueError(
                f"NiN's architecture needs inputs of at least "
                f"{minimum}x{minimum} pixels: smaller ones vanish in its "
                "convolutions and 3x3/2 max pooling before reaching the head. "
                f"Received: input shape {tuple(shape)}"
            )


def _block_options(
    num_mlp_layers: int,
    activation: str,
    use_batch_norm: bool,
    batch_norm_momentum: float,
    policy: keras.DTypePolicy,
) -> dict[str, Any]:
    """What every NiN block of a NiN shares; its images are channels last."""
    return {
        "num_mlp_layers": num_mlp_layers,
        "activation": activation,
        "use_batch_norm": use_batch_norm,
        "batch_norm_momentum": _checks.fraction(
            "batch_norm_momentum", batch_norm_momentum
        ),
        "data_format": "channels_last",
        "dtype": policy,
    }


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
            keras.layers.MaxPooling2D(
                spec.pool_size,
                spec.pool_strides,
                data_format="channels_last",  # NiN's images are channels last
                name=f"pool{index + 1}",
                dtype=policy,
            )
        )
    if spec.dropout:
        layers.append(
            keras.layers.Dropout(spec.dropout, name=f"dropout{index + 1}", dtype=policy)
        )
    return layers
