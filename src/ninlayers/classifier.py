"""`NiNImageClassifier`: a NiN trunk, its dense-free head, and training."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras

from ninlayers import _checks, _keras_compat, _steps, presets, runtime, saving
from ninlayers import _test_time as test_time
from ninlayers import _tf_feeding as feeding
from ninlayers import fused_updates as _fused
from ninlayers._utils import inference_weights
from ninlayers.backbone import NiNBackbone, check_image_size
from ninlayers.image_converter import NiNImageConverter
from ninlayers.layers import NiNClassifierHead

__all__ = ["NiNImageClassifier", "input_range"]


def _default_loss_and_metrics(model: Any, loss: Any, metrics: Any) -> tuple:
    """`compile()`'s `"auto"` loss (sparse categorical cross-entropy, from
    logits when the model outputs them) and metrics (accuracy)."""
    if loss == "auto":
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=model.output_activation is None
        )
    return loss, ["accuracy"] if metrics == "auto" else metrics


def _run_graph(
    model: Any,
    graph: Callable[..., Any],
    inputs: Any,
    training: Any = None,
    mask: Any = None,
) -> Any:
    """`graph(inputs)`, Keras's functional call of the trunk and head; in
    PyTorch's inference, their layers through `Layer.call` where that
    applies (`ninlayers._torch_inference`)."""
    if keras.backend.backend() == "torch" and not training and mask is None:
        from ninlayers import _torch_inference

        layers = _torch_inference.chain(model, inputs)
        if layers is not None:
            return _torch_inference.run(layers, inputs)
    return graph(inputs, training=training, mask=mask)


def _head(
    backbone: NiNBackbone,
    num_classes: int,
    kernel_size: int,
    final_activation: bool,
    output_activation: str | None,
) -> NiNClassifierHead:
    """The classifier's head, built as the backbone's blocks are."""
    return NiNClassifierHead(
        num_classes,
        _checks.positive_int("head_kernel_size", kernel_size),
        num_mlp_layers=backbone.num_mlp_layers,
        activation=backbone.activation,
        final_activation=_checks.boolean("head_final_activation", final_activation),
        use_batch_norm=backbone.use_batch_norm,
        batch_norm_momentum=backbone.batch_norm_momentum,
        output_activation=output_activation,
        data_format="channels_last",
        dtype=backbone.dtype_policy,
        name="head",
    )


def _mean_over_views(
    model: Any, graph: Callable[..., Any], inputs: Any, training: Any, mask: Any
) -> Any:
    """The mean of the graph's outputs over the model's test-time views
    (`ninlayers._test_time`): the outputs of `inputs` alone without any."""
    views = test_time.views(inputs, model.test_time_flip, model.test_time_shift)
    outputs = [_run_graph(model, graph, views[0][0], training, mask)]
    outputs += [_run_graph(model, graph, view, training) for view, _ in views[1:]]
    return test_time.mean(outputs)


def _symbolic_build(
    model: Any, keras_build: Any, iterator: Any, data_batch: Any
) -> Any:
    """Builds loss, metrics and optimizer before the step is traced (built in
    its first trace, `tf.function` would trace it again), and feeds arrays
    without `tf.data` autotuning unless `runtime.ARRAY_DATA_AUTOTUNE`. Under
    MultiWorkerMirroredStrategy Keras cannot reduce a nested batch to learn
    its shapes: one replica's batch has them."""
    strategy = _keras_compat.trainer_strategy(model)
    if strategy is None:
        if iterator is not None and not runtime.ARRAY_DATA_AUTOTUNE:
            options = feeding.autotune_options()
            _keras_compat.set_array_dataset_options(iterator, options)
        return _keras_compat.symbolic_build(model, iterator, data_batch)
    if iterator is not None:
        data_batch = _keras_compat.first_local_batch(iterator, strategy)
        iterator = None
    return keras_build(iterator=iterator, data_batch=data_batch)


@keras.saving.register_keras_serializable(package="ninlayers")
class NiNImageClassifier(keras.Model):
    """Image classification with a NiN trunk and a dense-free head.

    The graph is `head(backbone.output)`: the backbone's own layers, then a
    `NiNClassifierHead` with one map per class, global average pooling and
    softmax. The backbone stays reachable (`classifier.backbone`): freeze it
    with `classifier.backbone.trainable = False` (then compile) to train the
    head alone. A `preprocessor` maps stored pixels onto the floats the
    model computes on, inside the model; without one, any floats are taken.

    Training uses NiN's own `train_step` on every backend (clipping by
    global norm, a `gradient_norm` metric, correct losses under
    `tf.distribute`); `compile()` has defaults that train as is.

    Args:
        backbone: `NiNBackbone`. The trunk.
        num_classes: int. Number of classes. Defaults to `10`.
        preprocessor: `NiNImageConverter` or `None`. Defaults to `None`.
        head_kernel_size: int. Size of the head's first convolution.
            Defaults to `3`.
        head_final_activation: bool. Whether the class maps pass through
            the activation, as in the paper; `False` makes the last 1x1
            convolution linear (logits that can be negative), which trains
            faster with batch norm and cannot start dead. Defaults to `False`.
        output_activation: str or `None`. `"softmax"`, or `None` for logits.
            Defaults to `"softmax"`.
        class_names: list of str or `None`. A name per class, kept in the
            config. Defaults to `None`.
        test_time_flip: bool. At inference, average the outputs of each image
            and its mirror image, at twice the cost. Defaults to `False`.
        gradient_clip_norm: float or `None`. Clip gradients to this global
            norm in `train_step` (taken over the all-reduced gradient under
            `tf.distribute`, unlike the optimizer's `global_clipnorm`).
            Defaults to `None`.
        test_time_shift: int. At inference, also average the outputs of each
            image moved this many pixels right, left, down and up
            (zero-filled, as training shifts fill), at five times the cost
            (ten views with `test_time_flip`); `0` for none.
            Defaults to `0`.
        name: str. Defaults to `"nin_image_classifier"`.
        **kwargs: Base model arguments (`trainable`).

    Example:

    >>> import numpy as np
    >>> backbone = NiNBackbone("nin_28_narrow", dtype="float32")
    >>> classifier = NiNImageClassifier(backbone, num_classes=3,
    ...                                 class_names=["a", "b", "c"])
    >>> classifier.predict(np.zeros((2, 28, 28, 1)), verbose=0).shape
    (2, 3)
    >>> pretrained = NiNImageClassifier.from_preset("fashion_mnist")
    >>> pretrained.class_names[0]
    'T-shirt/top'
    >>> fresh_head = NiNImageClassifier.from_preset("fashion_mnist", num_classes=5)
    >>> fresh_head.backbone.trainable = False  # train the head alone first
    """

    def __init__(
        self,
        backbone: NiNBackbone,
        num_classes: int = 10,
        preprocessor: NiNImageConverter | None = None,
        head_kernel_size: int = 3,
        head_final_activation: bool = False,
        output_activation: str | None = "softmax",
        class_names: Sequence[str] | None = None,
        test_time_flip: bool = False,
        gradient_clip_norm: float | None = None,
        test_time_shift: int = 0,
        name: str = "nin_image_classifier",
        **kwargs: Any,
    ) -> None:
        _check_pieces(backbone, preprocessor)
        num_classes = _checks.positive_int("num_classes", num_classes)
        head = _head(
            backbone,
            num_classes,
            head_kernel_size,
            head_final_activation,
            output_activation,
        )
        # The backbone's own layers, not the backbone as one nested layer:
        # variables keep the paths `NiN` has always saved them under.
        super().__init__(
            inputs=backbone.input, outputs=head(backbone.output), name=name, **kwargs
        )
        self.dtype_policy = backbone.dtype_policy  # compile() reads it

        self.backbone = backbone
        self.preprocessor = preprocessor
        self.head = head
        self.num_classes = num_classes
        self.head_kernel_size = head.kernel_size[0]
        self.head_final_activation = bool(head_final_activation)
        self.output_activation = output_activation
        self.class_names = check_class_names(class_names, num_classes)
        self.test_time_flip, self.test_time_shift = test_time.checked(
            test_time_flip, test_time_shift
        )
        self.gradient_clip_norm = _checks.optional(
            _checks.positive_number, "gradient_clip_norm", gradient_clip_norm
        )
        self.gradient_norm_tracker = keras.metrics.Mean(name="gradient_norm")

    minimum_input_size = property(
        lambda self: self.backbone.minimum_input_size,
        doc="The smallest height and width the trunk takes.",
    )

    # --- Inference ---

    def call(self, inputs, training=None, mask=None):
        if self.preprocessor is not None:
            inputs = self.preprocessor(inputs)
        check_image_size(inputs.shape, self.minimum_input_size)
        if training:
            return _run_graph(self, super().call, inputs, training, mask)
        return _mean_over_views(self, super().call, inputs, training, mask)

    def _numpy_images(self, x: Any) -> Any:
        return x if self.preprocessor is None else self.preprocessor.check(x)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(self._numpy_images(inputs), *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.predict`; NumPy images go through the preprocessor's
        `check` (integer pixels mapped, floats range-checked if it asks),
        and on TensorFlow arrays are read without `tf.data`'s autotuning
        (`runtime.ARRAY_DATA_AUTOTUNE`), in batches of
        `runtime.PREDICT_BATCH_PIXELS` where none is given, several per call
        of the graph (`runtime.PREDICT_STEPS_PER_EXECUTION`)."""
        x = self._numpy_images(x)
        arguments = feeding.predict_arguments(self, x, args, kwargs)
        with inference_weights(self), arguments as (x, args, kwargs):
            return super().predict(x, *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, taking images as `predict` does."""
        with inference_weights(self):
            return super().evaluate(self._numpy_images(x), *args, **kwargs)

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, taking images as `predict` does."""
        return super().fit(self._numpy_images(x), *args, **kwargs)

    # --- Training ---

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        loss: Any = "auto",
        metrics: Any = "auto",
        jit_compile: bool | str = "auto",
        fused_updates: bool = True,
        **kwargs: Any,
    ) -> None:
        """Configures training, with defaults that train the classifier.

        Args:
            optimizer: str or optimizer. Defaults to `"adam"`.
            loss: loss or `"auto"`: sparse categorical cross-entropy, from
                logits when `output_activation` is `None`.
            metrics: list or `"auto"`: `["accuracy"]`.
            jit_compile: bool or `"auto"` (XLA where faster, per
                `runtime.resolve_jit_compile`; a loading backend re-resolves it).
            fused_updates: bool. Keras's Adam and SGD update each variable
                in one kernel where the backend has one (`ninlayers.fused_updates`).
            **kwargs: Other arguments of `keras.Model.compile`.
        """
        loss, metrics = _default_loss_and_metrics(self, loss, metrics)
        xla = runtime.resolve_jit_compile(jit_compile)
        super().compile(optimizer, loss, metrics=metrics, jit_compile=xla, **kwargs)
        if fused_updates:
            _fused.fuse(self.optimizer)
        self._jit_compile_asked = jit_compile

    def get_compile_config(self) -> dict[str, Any] | None:
        """The compile config, with `jit_compile="auto"` kept for the loading
        backend to resolve (JAX's XLA would be `torch.compile` on PyTorch)."""
        config = super().get_compile_config()
        if config and getattr(self, "_jit_compile_asked", None) == "auto":
            config["jit_compile"] = "auto"
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles the model from a saved compile config (when loading)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args):
        """One training step: forward, loss, gradients, clipping, update.

        The same contract on every backend (`ninlayers._steps`): the loss as
        Keras logs it, the compiled metrics, and `gradient_norm`, the global
        norm of the gradients before clipping to `gradient_clip_norm`.
        """
        return _steps.for_backend().train_step(self, *args)

    def test_step(self, *args):
        return _steps.for_backend().test_step(self, *args)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TensorFlow's trainer calls this as fit or evaluate starts.
        keras_build = super()._maybe_symbolic_build
        return _symbolic_build(self, keras_build, iterator, data_batch)

    # --- Config, presets, export ---

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "head_kernel_size": self.head_kernel_size,
            "head_final_activation": self.head_final_activation,
            "output_activation": self.output_activation,
            "class_names": self.class_names,
            "test_time_flip": self.test_time_flip,
            "test_time_shift": self.test_time_shift,
            "gradient_clip_norm": self.gradient_clip_norm,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NiNImageClassifier:
        config = dict(config)
        for piece in ("backbone", "preprocessor"):
            if isinstance(config.get(piece), dict):
                config[piece] = keras.saving.deserialize_keras_object(config[piece])
        return cls(**config)

    @classmethod
    def from_preset(
        cls, preset: str | os.PathLike, load_weights: bool = True, **kwargs: Any
    ) -> keras.Model:
        """A preset's classifier, with its pretrained weights, or a saved one.

        Passing `num_classes` (or `class_names` alone) gives the preset's
        pretrained trunk with a fresh head for that many classes, ready to
        fine-tune (timm's `create_model(name, pretrained=True,
        num_classes=N)`); the fresh head does not average with the mirror
        image unless `test_time_flip=True` is passed.

        Args:
            preset: str or path. A name in `ninlayers.presets.PRESETS`, a
                `.keras` file, or a directory holding `model.keras`.
            load_weights: bool. Load a pretrained preset's weights.
                Defaults to `True`.
            **kwargs: Arguments overriding the preset's, for any of its
                pieces: `NiNBackbone` ones (`image_shape` or `input_shape`,
                `dtype` or `precision`; the fastest safe precision for this
                machine by default), `NiNImageConverter` ones, and the
                classifier's. Not allowed with a file.

        Returns:
            `NiNImageClassifier` for a named preset (a `NiNBackbone` with
            `include_head=False`); the saved model for a file.

        Raises:
            ValueError: for an unknown name (the message lists them), or
                arguments given with a file.
            ModelFileError: if a file cannot be loaded or shipped weights
                fail their SHA-256.
        """
        return _load_preset(preset, load_weights, dict(kwargs))

    def export(
        self,
        filepath: str | os.PathLike,
        format: str = "tf_saved_model",
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs: Any,
    ) -> Any:
        """`keras.Model.export`, from the model's float32 copy.

        Whatever the dtype policy, the exported graph computes in float32
        with the same weights, so every format and runtime can load it:
        `"tf_saved_model"`, `"onnx"`, `"litert"`. `ninlayers.export.export`
        adds int8, ninlayers' metadata and the choice of test-time flip. On
        JAX, Keras exports `"tf_saved_model"`; on PyTorch, `"onnx"`. A
        format the backend cannot export raises one line saying so.

        Raises:
            ValueError: if Keras cannot export this format on this backend.
            ImportError: if the format needs a package that is missing.

        Example:

        >>> import tempfile
        >>> from ninlayers import NiN
        >>> NiN().export(f"{tempfile.mkdtemp()}/nin.tflite", format="litert",
        ...              verbose=False)
        """
        return _export(self, filepath, format, verbose, input_signature, kwargs)


_BACKBONE_ARGS = frozenset(
    {"architecture", "image_shape", "num_mlp_layers", "activation"}
    | {"use_batch_norm", "batch_norm_momentum", "dtype"}
)
_CONVERTER_ARGS = frozenset({"input_range", "image_size", "interpolation"})
_CONVERTER_ARGS |= {"check_range"}
# What a fresh head for other classes does not take from the preset's.
_HEAD_OF_THE_DATA = (
    "num_classes",
    "class_names",
    "test_time_flip",
    "test_time_shift",
)


def _load_preset(
    preset: str | os.PathLike, load_weights: bool, kwargs: dict[str, Any]
) -> keras.Model:
    """`NiNImageClassifier.from_preset`: a named preset or a saved file."""
    if not presets.is_preset(preset):
        path = presets.model_file(preset)
        if kwargs:
            raise ValueError(
                f"Arguments {sorted(kwargs)} apply to named presets only; "
                f"{path} is loaded as saved."
            )
        return saving.load_model(path)
    spec = presets.get(preset)
    include_head = _checks.boolean("include_head", kwargs.pop("include_head", True))
    backbone_args = backbone_arguments(kwargs)
    converter_args = {k: kwargs.pop(k) for k in _CONVERTER_ARGS & set(kwargs)}
    if not include_head:
        warnings.warn(
            "from_preset(..., include_head=False) is deprecated: use "
            "NiNBackbone.from_preset(...), the trunk alone. It goes in 0.4.0.",
            DeprecationWarning,
            stacklevel=3,
        )
        return NiNBackbone.from_preset(preset, load_weights, **backbone_args)
    backbone = NiNBackbone(**{**spec.backbone, **backbone_args})
    converter = None
    if spec.converter is not None or converter_args:
        converter = NiNImageConverter(**{**(spec.converter or {}), **converter_args})
    fresh_head = "num_classes" in kwargs or "class_names" in kwargs
    weights = presets.weights_file(preset) if load_weights and spec.weights else None
    if not fresh_head:
        model = NiNImageClassifier(
            backbone, preprocessor=converter, **{**spec.classifier, **kwargs}
        )
        if weights is not None:
            model.load_weights(weights)
        return model
    if weights is not None:
        backbone.load_weights(weights)
    if "num_classes" not in kwargs and kwargs["class_names"] is not None:
        kwargs["num_classes"] = len(kwargs["class_names"])
    head = {k: v for k, v in spec.classifier.items() if k not in _HEAD_OF_THE_DATA}
    return NiNImageClassifier(backbone, preprocessor=converter, **{**head, **kwargs})


def backbone_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pops a preset's `NiNBackbone` overrides out of `kwargs`.

    `input_shape` is taken for `image_shape` and `precision` for `dtype`;
    without either, the dtype is this machine's fastest safe precision
    (`ninlayers.runtime.resolve_precision`).
    """
    found = {k: kwargs.pop(k) for k in _BACKBONE_ARGS & set(kwargs)}
    if "input_shape" in kwargs:
        found["image_shape"] = kwargs.pop("input_shape")
    precision = kwargs.pop("precision", "auto")
    found.setdefault("dtype", runtime.resolve_precision(precision))
    return found


def input_range(model: Any) -> tuple[float, float] | None:
    """The float range a model maps integer pixels onto: its converter's for
    a `NiNImageClassifier` with one, `None` for any other model.

    >>> from ninlayers import NiN
    >>> input_range(NiN()), input_range(keras.Sequential())
    ((0.0, 1.0), None)
    """
    if isinstance(model, NiNImageClassifier) and model.preprocessor is not None:
        return model.preprocessor.input_range
    return None


def _export(model, filepath, format, verbose, input_signature, kwargs) -> Any:
    """Keras's export of the model's float32 copy, with one clear line where
    Keras cannot export this format on this backend."""
    from ninlayers import export

    copy = export.float32_copy(model)
    try:
        return keras.Model.export(
            copy, filepath, format, verbose, input_signature, **kwargs
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


def _check_pieces(backbone: Any, preprocessor: Any) -> None:
    if not isinstance(backbone, NiNBackbone):
        raise ValueError(
            "`backbone` must be a NiNBackbone (for example "
            "NiNBackbone('nin_28') or NiNBackbone.from_preset('fashion_mnist')). "
            f"Received: backbone={backbone!r}"
        )
    if preprocessor is not None and not isinstance(preprocessor, NiNImageConverter):
        raise ValueError(
            "`preprocessor` must be a NiNImageConverter or None. "
            f"Received: preprocessor={preprocessor!r}"
        )


def check_class_names(
    class_names: Sequence[str] | None, num_classes: int
) -> list[str] | None:
    """`class_names` as a list of one string per class, or `None`.

    Raises:
        ValueError: for a string (which would read as one name per
            character) or a list of another length.
    """
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise ValueError(
            "`class_names` must be a list of names, one per class "
            f"({num_classes}), not a string. Received: class_names={class_names!r}"
        )
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must have one name per class ({num_classes}). "
            f"Received: class_names={class_names!r}"
        )
    return class_names


def _torch_saved_model_failure(format: str, error: Exception) -> bool:
    """Whether `error` is Keras's SavedModel export failing on PyTorch."""
    return (
        keras.backend.backend() == "torch"
        and format == "tf_saved_model"
        and "dynamic_shapes" in str(error)
    )
