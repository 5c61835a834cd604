"""The NiN layers: the mlpconv block, its fast batch norm and the classifier head.

References:
    Lin, Chen and Yan, "Network In Network", ICLR 2014 (arXiv:1312.4400).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from ninlayers import _checks, runtime

__all__ = ["FusedBatchNormalization", "MaxPooling2D", "NiNBlock", "NiNClassifierHead"]


@keras.saving.register_keras_serializable(package="ninlayers")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation that runs the backend's fused kernel where it can.

    Same weights, arguments and results as `keras.layers.BatchNormalization`,
    but a 4D channels-last input goes through one kernel: on TensorFlow
    `tf.compat.v1.nn.fused_batch_norm` (oneDNN/cuDNN, float32 scale and
    offset, bfloat16 or float16 activations kept as they are), on PyTorch
    its own batch norm on the channels-last view of the tensor, where
    Keras runs a dozen elementwise operations (docs/performance.md has the
    measurements). Other inputs (a mask, renormalisation, another rank or
    axis, JAX) fall back to Keras's own code.

    Under a `tf.distribute` strategy with several replicas the statistics
    are the global batch's by default (`synchronized=None`), summed across
    the replicas as Keras's `synchronized=True` does, so training on N
    replicas equals training on one device, as JAX's `DataParallel` does.

    Args:
        synchronized: bool or `None`. `None`: the global batch's statistics
            under several `tf.distribute` replicas, the fused kernel
            otherwise. `True`: Keras's synchronized batch norm always.
            `False`: each replica normalises with its own part of the batch
            (Keras's default). Defaults to `None`.
        **kwargs: Arguments of `keras.layers.BatchNormalization`.

    Input shape:
        Any; the fast path takes `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Example:

    >>> import numpy as np
    >>> bn = FusedBatchNormalization()
    >>> y = bn(np.ones((2, 4, 4, 3), "float32"), training=True)
    >>> tuple(y.shape)
    (2, 4, 4, 3)
    """

    def __init__(self, synchronized: bool | None = None, **kwargs: Any) -> None:
        super().__init__(synchronized=bool(synchronized), **kwargs)
        self.synchronized = synchronized

    def _across_replicas(self) -> bool:
        """Whether this call runs in one of several `tf.distribute` replicas
        and should use the global batch's statistics."""
        if self.synchronized is not None or keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        return context is not None and context.num_replicas_in_sync > 1

    def _moments(self, inputs: Any, mask: Any) -> Any:
        if mask is None and self._across_replicas():
            return ops.moments(inputs, axes=self._reduction_axes, synchronized=True)
        return super()._moments(inputs, mask)

    def add_weight(self, *args: Any, **kwargs: Any) -> Any:
        # Under tf.distribute each replica updates the moving statistics from
        # its own part of the batch. "mean" aggregation averages the updates,
        # so every replica and every worker keeps the same statistics (with
        # Keras's default, "none", the workers' copies drift apart).
        if kwargs.get("name") in ("moving_mean", "moving_variance"):
            if kwargs.get("aggregation", "none") == "none":
                kwargs["aggregation"] = "mean"
        return super().add_weight(*args, **kwargs)

    def _fused_backend(self, inputs: Any, mask: Any) -> str | None:
        """The backend whose fused kernel runs this call, or `None` (Keras's
        own code)."""
        backend = keras.backend.backend()
        if (
            mask is not None
            or self.renorm
            or self.synchronized
            or len(inputs.shape) != 4
            or self.axis not in (3, -1)
        ):
            return None
        if backend == "torch":
            return backend
        # cuDNN's smallest epsilon (CUDNN_BN_MIN_EPSILON); TensorFlow's fused
        # kernel refuses less.
        if backend == "tensorflow" and self.epsilon >= 1.001e-5:
            return None if self._across_replicas() else backend
        return None

    def _update_moving(self, mean: Any, variance: Any) -> None:
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum)
        )

    def _torch_call(self, inputs: Any, training: Any) -> Any:
        from ninlayers import _torch_kernels

        outputs, moments = _torch_kernels.batch_norm(
            self, inputs, bool(training and self.trainable)
        )
        if moments is not None:
            _torch_kernels.update_moving(self, *moments)
        if keras.backend.standardize_dtype(outputs.dtype) == self.compute_dtype:
            return outputs
        return ops.cast(outputs, self.compute_dtype)

    def call(self, inputs, training=None, mask=None):
        fused = self._fused_backend(inputs, mask)
        if fused == "torch":
            return self._torch_call(inputs, training)
        if fused is None:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        if inputs.dtype not in (tf.float16, tf.bfloat16, tf.float32):
            inputs = tf.cast(inputs, tf.float32)
        scale = self.gamma.value if self.scale else tf.ones((channels,), "float32")
        offset = self.beta.value if self.center else tf.zeros((channels,), "float32")
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel returns the unbiased (n - 1) variance; Keras's moving
            # variance (and JAX's, PyTorch's) follows the biased one it
            # normalised with.
            count = tf.cast(tf.size(inputs) // channels, "float32")
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self._update_moving(mean, variance)
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                mean=self.moving_mean.value,
                variance=self.moving_variance.value,
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return ops.cast(outputs, self.compute_dtype)


#: Where a 1x1 convolution runs as one matrix product, by backend:
#: `"always"` or `"training"` (measured: docs/performance.md). TensorFlow's
#: inference keeps the convolution, which its graph optimiser fuses with
#: the bias (or, in float32, the batch norm) and ReLU after it.
POINTWISE_AS_MATMUL = {"tensorflow": "training", "jax": "always"}


def _pointwise(conv: keras.layers.Conv2D, x: Any) -> Any:
    """A 1x1, stride-1, channels-last `conv(x)` as one matrix product."""
    shape = ops.shape(x)
    # A reshape, not `kernel[0, 0]`: its gradient is free (a slice's is
    # a kernel of its own).
    kernel = ops.reshape(ops.cast(conv.kernel, x.dtype), conv.kernel.shape[2:])
    y = ops.matmul(ops.reshape(x, (-1, shape[-1])), kernel)
    if conv.use_bias:
        y = y + ops.cast(conv.bias, y.dtype)
    y = ops.reshape(y, (*shape[:-1], conv.filters))
    return y if conv.activation is None else conv.activation(y)


def _convolve(conv: keras.layers.Conv2D, x: Any, training: Any = None) -> Any:
    """`conv(x)`: a 1x1 one as a matrix product where that is faster, and
    through PyTorch's channels-last kernel on the torch backend."""
    when = POINTWISE_AS_MATMUL.get(keras.backend.backend())
    if (
        (when == "always" or (when == "training" and training is True))
        and tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.strides) == (1, 1)
        and conv.data_format == "channels_last"
        and conv.groups == 1
    ):
        return _pointwise(conv, x)
    if keras.backend.backend() == "torch":
        from ninlayers import _torch_kernels

        y = _torch_kernels.conv2d(conv, x)
        if y is not None:
            return y
    return conv(x)


def _normalize(norm: FusedBatchNormalization, x: Any, training: Any) -> Any:
    """`norm(x, training=training)`. On the torch backend, where PyTorch's
    kernel runs it and `x` is in its compute dtype already, the kernel is
    called directly: Keras's `Layer.__call__` (a sizeable part of a small
    batch's time on PyTorch) would only pass `x` and `training` on."""
    if (
        keras.backend.backend() == "torch"
        and norm.built
        and keras.backend.standardize_dtype(x.dtype) == norm.compute_dtype
        and norm._fused_backend(x, None) == "torch"
    ):
        return norm._torch_call(x, training)
    return norm(x, training=training)


def _convolve_and_normalize(
    conv: keras.layers.Conv2D,
    norm: FusedBatchNormalization | None,
    x: Any,
    training: Any,
) -> Any:
    """`norm(conv(x))`, or `conv(x)` without a norm. In inference on
    PyTorch and TensorFlow (`predict`, `evaluate`) one convolution with the
    batch norm folded in, unless `runtime.FOLD_BATCH_NORM` is off."""
    if norm is not None and not training and runtime.FOLD_BATCH_NORM:
        y = _folded(conv, norm, x)
        if y is not None:
            return y
    x = _convolve(conv, x, training)
    return x if norm is None else _normalize(norm, x, training)


def _folded(conv: keras.layers.Conv2D, norm: FusedBatchNormalization, x: Any) -> Any:
    """The backend's one convolution for inference's `norm(conv(x))`, or
    `None` where the two layers run."""
    backend = keras.backend.backend()
    if backend == "torch":
        from ninlayers import _torch_kernels

        return _torch_kernels.conv_batch_norm(conv, norm, x)
    if backend == "tensorflow":
        from ninlayers import _tf_inference

        return _tf_inference.conv_batch_norm(conv, norm, x)
    return None


def _activate(activation: Callable[..., Any], x: Any) -> Any:
    """`activation(x)` of a block's own intermediate tensor: ReLU in place
    on PyTorch outside autograd (no new tensor to allocate and fill)."""
    if activation is keras.activations.relu and keras.backend.backend() == "torch":
        from ninlayers import _torch_kernels

        return _torch_kernels.relu(x)
    return activation(x)


@keras.saving.register_keras_serializable(package="ninlayers")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D`, with a channels-last fast path on PyTorch.

    Same arguments and results as Keras's layer. On the torch backend a
    channels-last input is pooled by PyTorch's channels-last kernel without
    the two layout copies Keras's torch backend makes around it.

    Example:

    >>> import numpy as np
    >>> pool = MaxPooling2D(3, 2)
    >>> tuple(pool(np.zeros((2, 28, 28, 8), "float32")).shape)
    (2, 13, 13, 8)
    """

    def call(self, inputs):
        if keras.backend.backend() == "torch":
            from ninlayers import _torch_kernels

            outputs = _torch_kernels.max_pool(self, inputs)
            if outputs is not None:
                return outputs
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="ninlayers")
class NiNBlock(keras.layers.Layer):
    """The NiN micro-network ("mlpconv"): a kxk convolution, then 1x1 ones.

    With its defaults the block is exactly the paper's:
    one `kernel_size` convolution with `filters` outputs, then two 1x1
    convolutions with `filters` outputs, each with a bias and a ReLU. The 1x1
    convolutions are a small MLP that slides over every pixel. Its parameter
    count is `k*k*c_in*f + f + num_mlp_layers*(f*f + f)`.

    Args:
        filters: int. Number of output channels of every convolution.
        kernel_size: int or tuple of 2 ints. Size of the first convolution.
        strides: int or tuple of 2 ints. Strides of the first convolution.
            Defaults to `1`.
        padding: str. `"same"` or `"valid"`, for the first convolution.
            Defaults to `"same"`.
        num_mlp_layers: int. Number of 1x1 convolutions after the first one.
            Defaults to `2`.
        activation: str or callable. Activation after each convolution.
            Defaults to `"relu"`.
        final_activation: bool. Whether the last convolution is followed by the
            activation too. Defaults to `True`.
        use_batch_norm: bool. Whether each convolution (then without bias) is
            followed by `FusedBatchNormalization` before the activation. With
            `final_activation=False` the last convolution stays a linear
            projection with a bias and no batch norm. Defaults to `False`.
        batch_norm_momentum: float. Momentum of the moving statistics.
            Defaults to `0.99`.
        kernel_initializer: str or initializer. Defaults to `"glorot_uniform"`.
        bias_initializer: str or initializer. Defaults to `"zeros"`.
        kernel_regularizer: str, regularizer or `None`. Defaults to `None`.
        bias_regularizer: str, regularizer or `None`. Defaults to `None`.
        data_format: str or `None`. `"channels_last"` or `"channels_first"`;
            `None` takes `keras.config.image_data_format()`. Defaults to `None`.
        **kwargs: Base layer arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, rows, cols, channels)` (or channels first).

    Output shape:
        4D tensor `(batch, new_rows, new_cols, filters)`, where `new_rows` is
        `ceil(rows / strides)` with `"same"` padding and
        `floor((rows - kernel) / strides) + 1` with `"valid"`.

    Example:

    >>> import numpy as np
    >>> block = NiNBlock(96, 3)
    >>> tuple(block(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 28, 28, 96)
    >>> block.count_params() == 3 * 3 * 1 * 96 + 96 + 2 * (96 * 96 + 96)
    True

    References:
        Lin, Chen and Yan, "Network In Network", ICLR 2014 (arXiv:1312.4400).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "same",
        num_mlp_layers: int = 2,
        activation: str | Callable[..., Any] = "relu",
        final_activation: bool = True,
        use_batch_norm: bool = False,
        batch_norm_momentum: float = 0.99,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = _checks.positive_int("filters", filters)
        self.kernel_size = _checks.pair("kernel_size", kernel_size)
        self.strides = _checks.pair("strides", strides)
        self.padding = _checks.padding(padding)
        self.num_mlp_layers = _checks.non_negative_int("num_mlp_layers", num_mlp_layers)
        self.activation = _checks.activation("activation", activation)
        self.final_activation = _checks.boolean("final_activation", final_activation)
        self.use_batch_norm = _checks.boolean("use_batch_norm", use_batch_norm)
        self.batch_norm_momentum = _checks.fraction(
            "batch_norm_momentum", batch_norm_momentum
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.data_format = _checks.data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

        self.convs = []
        self.norms = []
        last = self.num_mlp_layers
        for index in range(1 + self.num_mlp_layers):
            first = index == 0
            # Batch norm goes with an activation: a last convolution without
            # one is a linear projection (logits) and keeps its bias instead.
            normed = self.use_batch_norm and (index < last or self.final_activation)
            self.convs.append(
                keras.layers.Conv2D(
                    self.filters,
                    self.kernel_size if first else 1,
                    strides=self.strides if first else 1,
                    padding=self.padding if first else "valid",
                    data_format=self.data_format,
                    use_bias=not normed,
                    kernel_initializer=self.kernel_initializer,
                    bias_initializer=self.bias_initializer,
                    kernel_regularizer=self.kernel_regularizer,
                    bias_regularizer=self.bias_regularizer,
                    name=f"conv{index}",
                    dtype=self.dtype_policy,
                )
            )
            self.norms.append(
                FusedBatchNormalization(
                    axis=-1 if self.data_format == "channels_last" else 1,
                    momentum=self.batch_norm_momentum,
                    name=f"norm{index}",
                    dtype=self.dtype_policy,
                )
                if normed
                else None
            )

    def build(self, input_shape) -> None:
        channel_axis = -1 if self.data_format == "channels_last" else 1
        if input_shape[channel_axis] is None:
            raise ValueError(
                "The channel dimension of the inputs of NiNBlock must be known. "
                f"Received: input_shape={input_shape}"
            )
        shape = tuple(input_shape)
        for index, conv in enumerate(self.convs):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if self.norms[index] is not None:
                self.norms[index].build(shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis: input_shape[channel_axis]}
        )

    def call(self, inputs, training=None):
        x = inputs
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            x = _convolve_and_normalize(conv, self.norms[index], x, training)
            if index < last or self.final_activation:
                x = _activate(self.activation, x)
        return x

    def compute_output_shape(self, input_shape) -> tuple:
        return self.convs[0].compute_output_shape(tuple(input_shape))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "num_mlp_layers": self.num_mlp_layers,
                "activation": keras.activations.serialize(self.activation),
                "final_activation": self.final_activation,
                "use_batch_norm": self.use_batch_norm,
                "batch_norm_momentum": self.batch_norm_momentum,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "data_format": self.data_format,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ninlayers")
class NiNClassifierHead(keras.layers.Layer):
    """Class scores without dense layers: a NiN block, pooling, softmax.

    A `NiNBlock` with `num_classes` output channels makes one spatial map per
    class; global average pooling turns each map into that class's score, and
    a softmax (computed in float32 under mixed precision) into probabilities.
    `class_maps()` gives the maps before pooling: they show where each class
    was seen (class activation maps).

    Args:
        num_classes: int. Number of classes.
        kernel_size: int or tuple of 2 ints. Size of the block's first
            convolution. Defaults to `3`.
        num_mlp_layers: int. Number of 1x1 convolutions in the block.
            Defaults to `2`.
        activation: str or callable. Activation inside the block.
            Defaults to `"relu"`.
        final_activation: bool. Whether the class maps pass through the
            activation too, as in the paper. Defaults to `True`.
        use_batch_norm: bool. Batch normalisation inside the block.
        batch_norm_momentum: float. Momentum of its moving statistics.
            Defaults to `0.99`.
            Defaults to `False`.
        output_activation: str or `None`. `"softmax"` for probabilities, `None`
            (or `"linear"`) for logits. Defaults to `"softmax"`.
        kernel_initializer: str or initializer. Defaults to `"glorot_uniform"`.
        kernel_regularizer: str, regularizer or `None`. Defaults to `None`.
        data_format: str or `None`. Defaults to `None`.
        **kwargs: Base layer arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, rows, cols, channels)` (or channels first).

    Output shape:
        2D tensor `(batch, num_classes)`.

    Example:

    >>> import keras, numpy as np
    >>> head = NiNClassifierHead(10)
    >>> probs = keras.ops.convert_to_numpy(head(np.ones((2, 5, 5, 384), "float32")))
    >>> probs.shape
    (2, 10)
    >>> bool(np.allclose(np.sum(probs, axis=-1), 1.0, atol=1e-5))
    True
    >>> tuple(head.class_maps(np.ones((2, 5, 5, 384), "float32")).shape)
    (2, 5, 5, 10)
    """

    def __init__(
        self,
        num_classes: int,
        kernel_size: int | tuple[int, int] = 3,
        num_mlp_layers: int = 2,
        activation: str | Callable[..., Any] = "relu",
        final_activation: bool = True,
        use_batch_norm: bool = False,
        batch_norm_momentum: float = 0.99,
        output_activation: str | None = "softmax",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        if output_activation == "linear":
            output_activation = None
        self.output_activation = _checks.one_of(
            "output_activation", output_activation, ("softmax", "linear", None)
        )
        self.data_format = _checks.data_format(data_format)
        self.block = NiNBlock(
            self.num_classes,
            kernel_size,
            num_mlp_layers=num_mlp_layers,
            activation=activation,
            final_activation=final_activation,
            use_batch_norm=use_batch_norm,
            batch_norm_momentum=batch_norm_momentum,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            data_format=self.data_format,
            name="block",
            dtype=self.dtype_policy,
        )
        self.pool = keras.layers.GlobalAveragePooling2D(
            data_format=self.data_format, name="pool", dtype=self.dtype_policy
        )
        mixed = self.dtype_policy.compute_dtype in ("float16", "bfloat16")
        self.output_layer = keras.layers.Activation(
            self.output_activation or "linear",
            name="output",
            dtype="float32" if mixed else self.dtype_policy,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)
        # One attribute per argument (standardised by the block).
        self.kernel_size = self.block.kernel_size
        self.num_mlp_layers = self.block.num_mlp_layers
        self.activation = self.block.activation
        self.final_activation = self.block.final_activation
        self.use_batch_norm = self.block.use_batch_norm
        self.batch_norm_momentum = self.block.batch_norm_momentum
        self.kernel_initializer = self.block.kernel_initializer
        self.kernel_regularizer = self.block.kernel_regularizer

    def build(self, input_shape) -> None:
        self.block.build(input_shape)
        maps_shape = self.block.compute_output_shape(input_shape)
        self.pool.build(maps_shape)
        self.output_layer.build(self.pool.compute_output_shape(maps_shape))

    def class_maps(self, inputs, training=None):
        """Returns the per-class spatial maps, before pooling.

        Args:
            inputs: 4D tensor. The feature map the head classifies.
            training: bool or `None`. Training mode for batch norm.

        Returns:
            4D tensor with `num_classes` channels, one map per class.
        """
        return self.block(inputs, training=training)

    def call(self, inputs, training=None):
        maps = self.block(inputs, training=training)
        return self.output_layer(self.pool(maps))

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs, training=None) -> keras.KerasTensor:
        # The scores come out of the output layer, in float32 under mixed
        # precision.
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape),
            dtype=self.output_layer.compute_dtype,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kernel_size": self.kernel_size,
                "num_mlp_layers": self.num_mlp_layers,
                "activation": keras.activations.serialize(self.activation),
                "final_activation": self.final_activation,
                "use_batch_norm": self.use_batch_norm,
                "batch_norm_momentum": self.batch_norm_momentum,
                "output_activation": self.output_activation,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "data_format": self.data_format,
            }
        )
        return config
