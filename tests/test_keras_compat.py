"""Each private Keras or TensorFlow internal ninlayers uses still exists.

A Keras upgrade that removes one fails here, by name, rather than deep in a
distributed training run.
"""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import SMALL
from ninlayers import NiN, NiNImageClassifier, _keras_compat


def test_symbolic_build_hook_exists_with_its_arguments():
    _keras_compat.check_symbolic_build_hook()
    # The classifier's override is the one the trainer calls, for NiN too.
    assert _keras_compat.SYMBOLIC_BUILD in NiNImageClassifier.__dict__
    assert issubclass(NiN, NiNImageClassifier)


def test_keras_still_records_whether_a_model_was_called():
    """`was_called` reads Keras's `_called`; without it every model would
    count as called and ONNX export would get an uncalled model."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert hasattr(model, "_called") and not _keras_compat.was_called(model)
    model(np.zeros((1, 3), "float32"))
    assert _keras_compat.was_called(model)


def test_symbolic_build_check_fails_when_the_hook_is_gone(monkeypatch):
    for cls in keras.Model.__mro__:
        if _keras_compat.SYMBOLIC_BUILD in cls.__dict__:
            monkeypatch.delattr(cls, _keras_compat.SYMBOLIC_BUILD)
    with pytest.raises(RuntimeError, match="_maybe_symbolic_build"):
        _keras_compat.check_symbolic_build_hook()


def test_loss_tracker_is_the_metric_behind_the_loss_log():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")
    model.compile()
    tracker = _keras_compat.loss_tracker(model)
    x = np.zeros((4, 16, 16, 1), "float32")
    logs = model.train_on_batch(x, np.zeros(4), return_dict=True)
    assert float(tracker.result()) == pytest.approx(logs["loss"])
    uncompiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(RuntimeError, match="_loss_tracker"):
        _keras_compat.loss_tracker(uncompiled)


def test_trainer_strategy_is_the_strategy_the_model_was_built_in():
    def build():
        return NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")

    assert _keras_compat.trainer_strategy(build()) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        assert _keras_compat.trainer_strategy(build()) is strategy


def test_multi_worker_mode_method_exists():
    module = sys.modules[tf.distribute.MultiWorkerMirroredStrategy.__module__]
    extended = module.CollectiveAllReduceExtended
    assert callable(extended._in_multi_worker_mode)
    assert _keras_compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False


def test_first_local_batch_takes_the_first_replica():
    strategy = tf.distribute.get_strategy()
    batches = iter([(np.ones((2, 3)), np.zeros(2))])
    batch = _keras_compat.first_local_batch([(0, 0, batches)], strategy)
    assert batch[0].shape == (2, 3)


def test_initial_epoch_set_in_on_train_begin_starts_fit_there():
    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _keras_compat.set_initial_epoch(self.model, 2)

    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")
    model.compile()
    x, y = np.zeros((4, 16, 16, 1), "float32"), np.zeros(4)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[Resume()])
    assert history.epoch == [2]
    del model._initial_epoch
    with pytest.raises(RuntimeError, match="_initial_epoch"):
        _keras_compat.set_initial_epoch(model, 1)


def test_coordination_service_gets_the_longer_timeouts():
    import socket

    from helpers import run_python

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = run_python(
        f"""
        import json, os
        os.environ["TF_CONFIG"] = json.dumps({{
            "cluster": {{"worker": ["127.0.0.1:{port}"]}},
            "task": {{"type": "worker", "index": 0}},
        }})
        from tensorflow.python.eager import context
        from ninlayers import runtime
        strategy = runtime.get_strategy("multiworker")
        config = context.context().config.experimental.coordination_config
        print(config.heartbeat_timeout_in_ms, config.shutdown_barrier_timeout_in_ms,
              strategy.num_replicas_in_sync)
        """
    )
    assert out.split()[-3:] == ["120000", "120000", "1"]


def test_batch_spec_reads_an_epoch_iterators_batches_without_taking_one():
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    x, y = np.zeros((6, 16, 16, 1), "float32"), np.arange(6)
    iterator = TFEpochIterator(
        x=x, y=y, batch_size=4, distribute_strategy=tf.distribute.get_strategy()
    )
    spec_x, spec_y = _keras_compat.batch_spec(iterator)
    assert spec_x.shape.as_list() == [None, 16, 16, 1] and spec_x.dtype == tf.float32
    assert spec_y.shape.as_list() == [None]
    batches = [b for _, _, it in iterator for b in it]
    assert [len(b[1]) for b in batches] == [4, 2]  # nothing was taken
    with pytest.raises(RuntimeError, match="_distributed_dataset"):
        _keras_compat.batch_spec(object())


def test_array_dataset_options_reach_keras_array_pipelines_only():
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    x, y = np.zeros((6, 16, 16, 1), "float32"), np.arange(6)
    options = tf.data.Options()
    options.autotune.enabled = False
    strategy = tf.distribute.get_strategy()
    arrays = TFEpochIterator(x=x, y=y, batch_size=4, distribute_strategy=strategy)
    assert _keras_compat.set_array_dataset_options(arrays, options)
    assert arrays._distributed_dataset.options().autotune.enabled is False
    batches = [b for _, _, it in arrays for b in it]
    assert [len(b[1]) for b in batches] == [4, 2]  # the same batches
    own = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    given = TFEpochIterator(x=own, distribute_strategy=strategy)
    assert not _keras_compat.set_array_dataset_options(given, options)
    assert given._distributed_dataset.options().autotune.enabled is None


def test_array_dataset_is_keras_own_pipeline_for_fit_and_predict():
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    x = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    y = np.arange(10) * 3
    strategy = tf.distribute.get_strategy()
    keras_fit = TFEpochIterator(x=x, y=y, batch_size=4, distribute_strategy=strategy)
    keras_sizes = [len(b[1]) for _, _, it in keras_fit for b in it]
    fit = _keras_compat.array_dataset(x, 4, y, shuffle=True)
    assert fit.cardinality() == 3 and [len(b[1]) for b in fit] == keras_sizes
    seen = np.concatenate([np.stack([bx[:, 0, 0, 0], by]) for bx, by in fit], 1)
    assert sorted(seen[0]) == list(range(10))  # every image once, shuffled,
    np.testing.assert_array_equal(seen[1], seen[0] * 3)  # with its own label
    predict = _keras_compat.array_dataset(x, None)  # Keras's default 32
    np.testing.assert_array_equal(np.concatenate(list(predict)), x)
    assert _keras_compat.array_dataset(tf.data.Dataset.range(3), 4) is None


def test_symbolic_build_builds_metrics_and_optimizer_from_a_spec():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")
    model.compile()
    spec = (tf.TensorSpec([None, 16, 16, 1]), tf.TensorSpec([None], tf.int64))
    _keras_compat.symbolic_build(model, None, spec)
    assert model.optimizer.built and model._compile_metrics.built
    with pytest.raises(RuntimeError, match="_symbolic_build"):
        _keras_compat.symbolic_build(object(), None, spec)


def test_uncast_values_read_variables_as_stored_inside_an_autocast_scope():
    variables = [keras.Variable(np.full((2,), x, "float32")) for x in (1.5, 2.5)]
    with keras.src.backend.AutocastScope("bfloat16"):
        assert keras.backend.standardize_dtype(variables[0].value.dtype) == "bfloat16"
        values = _keras_compat.uncast_values(variables)
    assert [keras.backend.standardize_dtype(v.dtype) for v in values] == ["float32"] * 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(values[1]), [2.5, 2.5])


def test_uncast_values_read_a_stateless_scopes_values():
    variable = keras.Variable(np.zeros(2, "float32"))
    with keras.StatelessScope(state_mapping=[(variable, np.ones(2, "float32"))]):
        (value,) = _keras_compat.uncast_values([variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(value), [1.0, 1.0])


def test_uncast_values_fail_loudly_without_keras_autocast_scope(monkeypatch):
    monkeypatch.delattr(keras.src.backend, "AutocastScope")
    with pytest.raises(RuntimeError, match="AutocastScope"):
        _keras_compat.uncast_values([keras.Variable(np.zeros(2, "float32"))])
