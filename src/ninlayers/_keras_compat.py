"""Every use of a private Keras or TensorFlow internal, in one place.

ninlayers needs twelve internals, each to work around a Keras 3 limitation
under `tf.distribute` (docs/distributed.md), to log as Keras does, to
trace TensorFlow's training step once, to feed arrays without tf.data's
autotuning, to run an optimizer's update as one fused kernel
(`ninlayers.fused_updates`), or to keep the weights PyTorch's kernels were
given while they are unchanged. The accessors fail loudly, naming the
Keras version, if an upgrade removes what they rely on (`trainer_strategy`
excepted: the other backends never have it), and
tests/test_keras_compat.py checks that each internal still exists.

- `Model._maybe_symbolic_build(iterator, data_batch)`: the TensorFlow
  trainer's hook that builds metrics and optimizer from the first batch.
  NiN overrides it because the trainer reduces a distributed batch in a way
  `MultiWorkerMirroredStrategy` refuses, and because without a strategy it
  builds nothing (see `_symbolic_build` below).
- `Trainer._symbolic_build(data_batch=...)`: builds the model's loss,
  metrics and optimizer from a batch's shapes. Keras's TensorFlow trainer
  calls it only under a strategy; without one the metrics and optimizer
  create their variables inside the first trace of the step, and
  `tf.function` then traces it a second time.
- `TFEpochIterator._distributed_dataset`: the dataset an epoch iterator
  reads, whose `element_spec` gives that batch's shapes without taking one,
  and which `set_array_dataset_options` replaces by itself with options.
- `keras.src.trainers.data_adapters.ArrayDataAdapter`: `predict`'s
  pipeline for arrays (`get_tf_dataset`), built before Keras would, and
  the class of an
  epoch iterator's `data_adapter` when Keras built its dataset from arrays
  (rather than taking the caller's own dataset or generator).
- `Model._distribute_strategy`: the `tf.distribute` strategy the TensorFlow
  trainer was compiled under (absent on the other backends).
- `Model._loss_tracker`: the `Mean` metric behind the `loss` log, which a
  custom `train_step` updates to log the loss as Keras's own step does.
- `Model._initial_epoch`: the epoch `fit` starts from when set, as Keras's
  `BackupAndRestore` sets it on restoring.
- `tensorflow.python.eager.context.context().configure_coordination_service`:
  the coordination service's heartbeat and shutdown-barrier timeouts, which
  `MultiWorkerMirroredStrategy` does not expose (it sets the service up with
  TensorFlow's defaults unless one is configured first).
- `MultiWorkerMirroredStrategy.extended._in_multi_worker_mode()`: whether a
  strategy spans several workers (the only case whose logs need a shape).
- `Optimizer._get_variable_index(variable)` with Adam's `_momentums` and
  `_velocities` (SGD's `momentums` is public): a variable's slot variables,
  which a fused kernel updates in place.
- The torch optimizers' `_parallel_update_step(grads, variables,
  learning_rate)`: the update of all variables at once, after Keras's
  `apply` has scaled, clipped and decayed the gradients.
- `keras.src.backend.AutocastScope(None)`: reads a variable as stored
  inside a layer's mixed-precision scope (where a read is a cast copy), so
  that `ninlayers._torch_kernels.cached_weights` can tell, by the stored
  tensor and its version counter, whether a converted weight still holds;
  outside `keras.src.backend.in_stateless_scope()`, `Variable._value` is
  that tensor, read without `value`'s checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import keras

#: Keras versions this module was checked against.
TESTED_KERAS = "3.15"

SYMBOLIC_BUILD = "_maybe_symbolic_build"


def _missing(what: str) -> RuntimeError:
    return RuntimeError(
        f"ninlayers relies on the Keras internal {what}, which Keras "
        f"{keras.__version__} does not have (checked with Keras {TESTED_KERAS}). "
        "Install a Keras version ninlayers supports, or report this."
    )


def check_symbolic_build_hook() -> None:
    """Raises if `keras.Model` lacks `_maybe_symbolic_build(iterator, data_batch)`."""
    hook = getattr(keras.Model, SYMBOLIC_BUILD, None)
    if hook is None:
        raise _missing(f"Model.{SYMBOLIC_BUILD}")
    parameters = inspect.signature(hook).parameters
    if not {"iterator", "data_batch"} <= set(parameters):
        raise _missing(f"Model.{SYMBOLIC_BUILD}(iterator, data_batch)")


def first_local_batch(iterator: Any, strategy: Any) -> Any:
    """Returns the first local replica's part of the trainer's next batch.

    `iterator` is what the TensorFlow trainer passes to
    `_maybe_symbolic_build`: it yields `(step, size, batches)` triples.
    """
    import tensorflow as tf

    def first_local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    for _, _, batches in iterator:
        return tf.nest.map_structure(first_local, next(batches))
    return None


def batch_spec(iterator: Any) -> Any:
    """The `element_spec` of the dataset a TensorFlow epoch iterator reads:
    the shapes and dtypes of its batches, none of them taken."""
    dataset = getattr(iterator, "_distributed_dataset", None)
    spec = getattr(dataset, "element_spec", None)
    if spec is None:
        raise _missing("TFEpochIterator._distributed_dataset.element_spec")
    return spec


def set_array_dataset_options(iterator: Any, options: Any) -> bool:
    """Applies `tf.data.Options` to the dataset a TensorFlow epoch iterator
    reads, when Keras built that dataset from arrays; a dataset or generator
    the caller passed keeps its own options, and so does a distributed one.
    Returns whether the options were applied."""
    import tensorflow as tf

    try:
        from keras.src.trainers.data_adapters.array_data_adapter import (
            ArrayDataAdapter,
        )
    except ImportError:
        raise _missing("keras.src.trainers.data_adapters.ArrayDataAdapter") from None
    if not isinstance(getattr(iterator, "data_adapter", None), ArrayDataAdapter):
        return False
    dataset = getattr(iterator, "_distributed_dataset", None)
    if dataset is None:
        raise _missing("TFEpochIterator._distributed_dataset")
    if not isinstance(dataset, tf.data.Dataset):
        return False
    iterator._distributed_dataset = dataset.with_options(options)
    return True


def reads_as_arrays(x: Any, y: Any = None) -> bool:
    """Whether Keras reads `x` (and `y`) as arrays: not a dataset, a
    generator or a `PyDataset`."""
    try:
        from keras.src.trainers.data_adapters import array_data_adapter
    except ImportError:
        raise _missing("keras.src.trainers.data_adapters.array_data_adapter") from None
    return bool(array_data_adapter.can_convert_arrays((x, y, None)))


def array_dataset(
    x: Any, batch_size: int | None, y: Any = None, shuffle: bool = False
) -> Any:
    """The `tf.data` pipeline Keras's TensorFlow trainer builds for arrays
    (`ArrayDataAdapter.get_tf_dataset`: the same batches, and their
    number): `predict`'s by default, `fit`'s with `y` and `shuffle=True`.
    `None` where Keras would not read `x` as arrays (a dataset, a
    generator, a `PyDataset`)."""
    if not reads_as_arrays(x, y):
        return None
    import tensorflow as tf
    from keras.src.trainers.data_adapters import array_data_adapter

    adapter = array_data_adapter.ArrayDataAdapter(
        x, y, batch_size=batch_size, shuffle=shuffle
    )
    # Its cardinality is lost on the way: Keras would count no batches (no
    # progress bar total) and end on running out of data, with a warning.
    known = tf.data.experimental.assert_cardinality(adapter.num_batches)
    return adapter.get_tf_dataset().apply(known)


def symbolic_build(model: keras.Model, iterator: Any, data_batch: Any) -> None:
    """Builds `model`'s loss, metrics and optimizer with Keras's own symbolic
    build, from `data_batch` or else from the batches `iterator` reads (a
    TensorFlow epoch iterator, of which no batch is taken)."""
    if iterator is None and data_batch is None:
        return
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        raise _missing("Trainer._symbolic_build")
    build(data_batch=batch_spec(iterator) if data_batch is None else data_batch)


def trainer_strategy(model: keras.Model) -> Any:
    """The `tf.distribute` strategy a model trains under, or `None` (the
    TensorFlow trainer sets it at `compile`; other backends have none)."""
    return getattr(model, "_distribute_strategy", None)


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """Returns the metric behind a compiled model's `loss` log."""
    tracker = getattr(model, "_loss_tracker", None)
    if not isinstance(tracker, keras.metrics.Mean):
        raise _missing("Model._loss_tracker (a keras.metrics.Mean once compiled)")
    return tracker


def in_multi_worker_mode(strategy: Any) -> bool:
    """Returns whether a `tf.distribute` strategy spans several workers."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    method = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if method is None:
        raise _missing("MultiWorkerMirroredStrategy.extended._in_multi_worker_mode")
    return bool(method())


def set_initial_epoch(model: keras.Model, epoch: int) -> None:
    """Makes the coming `fit` start at `epoch`, as `BackupAndRestore` does
    (from a callback's `on_train_begin`)."""
    if not hasattr(model, "_initial_epoch"):
        raise _missing("Model._initial_epoch")
    model._initial_epoch = epoch


def configure_coordination(heartbeat_timeout_ms: int, shutdown_barrier_ms: int) -> bool:
    """Sets up TensorFlow's coordination service as `MultiWorkerMirroredStrategy`
    would, with longer heartbeat and shutdown-barrier timeouts; call it
    before creating the strategy. Returns `False` (doing nothing) when the
    service is already set up or `TF_CONFIG` names no chief or worker job.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import (
        TFConfigClusterResolver,
    )
    from tensorflow.python.eager import context

    ctx = context.context()
    if not hasattr(ctx, "configure_coordination_service"):
        raise _missing("tf context().configure_coordination_service")
    resolver = TFConfigClusterResolver()
    cluster = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    if ctx.coordination_service is not None or resolver.task_type not in (
        "chief",
        "worker",
    ):
        return False
    jobs = [
        coordination_config_pb2.CoordinatedJob(
            name=job, num_tasks=cluster.num_tasks(job)
        )
        for job in ("chief", "worker")
        if job in cluster.jobs
    ]
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        heartbeat_timeout_in_ms=heartbeat_timeout_ms,
        shutdown_barrier_timeout_in_ms=shutdown_barrier_ms,
        coordinated_jobs=jobs,
    )
    return True


def was_called(model: keras.Model) -> bool:
    """Whether a model has been called once (Keras's ONNX export needs it);
    `True` where Keras no longer records it."""
    return bool(getattr(model, "_called", True))


#: The torch optimizers' update of all variables at once.
TORCH_UPDATE = "_parallel_update_step"


def slot_variables(
    optimizer: keras.optimizers.Optimizer, variable: Any, *lists: str
) -> list[Any]:
    """The slot variables of `variable` in `optimizer`'s lists named `lists`
    (e.g. Adam's `"_momentums"`, `"_velocities"`)."""
    index_of = getattr(optimizer, "_get_variable_index", None)
    if index_of is None or not all(hasattr(optimizer, name) for name in lists):
        raise _missing(f"Optimizer._get_variable_index and {', '.join(lists)}")
    index = index_of(variable)
    return [getattr(optimizer, name)[index] for name in lists]


def uncast_values(variables: Sequence[Any]) -> list[Any]:
    """Each `variable.value` in the variable's own dtype, even inside a
    layer's mixed-precision scope (where reading it gives a cast copy).

    Outside a stateless scope that is the tensor each variable holds
    (`Variable._value`), read without `value`'s per-variable scope checks:
    a batch of PyTorch's inference checks its weights' dozens of variables.
    """
    scope = getattr(keras.src.backend, "AutocastScope", None)
    in_stateless_scope = getattr(keras.src.backend, "in_stateless_scope", None)
    if scope is None or in_stateless_scope is None:
        raise _missing("keras.src.backend.AutocastScope and in_stateless_scope")
    if not in_stateless_scope():
        held = [getattr(variable, "_value", None) for variable in variables]
        if all(value is not None for value in held):
            return held
    with scope(None):
        return [variable.value for variable in variables]


def torch_update(optimizer: keras.optimizers.Optimizer) -> Any:
    """A torch optimizer's bound `_parallel_update_step`."""
    update = getattr(optimizer, TORCH_UPDATE, None)
    if update is None:
        raise _missing(f"the torch optimizers' {TORCH_UPDATE}")
    return update
