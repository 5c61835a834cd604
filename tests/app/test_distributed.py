"""tf.distribute: strategy choice, chief election, two real workers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import RUN_ARTIFACTS, saved_epoch
from ninlayers import runtime


def test_strategy_names():
    assert runtime.get_strategy("default").num_replicas_in_sync == 1
    assert runtime.get_strategy("auto").num_replicas_in_sync == 1  # no GPUs
    mirrored = runtime.get_strategy("mirrored", ["/cpu:0"])
    assert type(mirrored).__name__ == "MirroredStrategy"
    with pytest.raises(ValueError, match="Received: strategy='tpu'"):
        runtime.get_strategy("tpu")


def test_data_parallel_is_jax_s():
    with pytest.raises(ValueError, match="needs KERAS_BACKEND=jax"):
        runtime.get_strategy("data-parallel")


@pytest.mark.parametrize(
    "count, index, chief, folder",
    [("2", "0", True, None), ("2", "1", False, ".process-1"), ("1", "0", True, None)],
)
def test_jax_process_election(monkeypatch, count, index, chief, folder):
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", count)
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", index)
    assert runtime.is_chief() is chief
    assert runtime.task_dir_name() == folder


@pytest.mark.parametrize(
    "count, index, message",
    [
        ("two", "0", "KERAS_DISTRIBUTION_NUM_PROCESSES must be .* Received: 'two'"),
        ("0", "0", "KERAS_DISTRIBUTION_NUM_PROCESSES must be .* Received: '0'"),
        ("2", "", "KERAS_DISTRIBUTION_PROCESS_ID must be .* Received: ''"),
    ],
)
def test_jax_process_variables_are_checked(monkeypatch, count, index, message):
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", count)
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", index)
    with pytest.raises(ValueError, match=message):
        runtime.is_chief()


def test_data_parallel_batches_split_evenly_and_whole():
    from ninlayers.app import trainer
    from ninlayers.errors import DatasetError

    two = object.__new__(runtime.DataParallel)  # as over two devices
    two.num_replicas_in_sync = 2
    trainer._check_even_split(64, two)
    with pytest.raises(ValueError, match="over the 2 devices .* batch_size=63"):
        trainer._check_even_split(63, two)
    assert trainer._steps(100, 32, whole_batches=False) == 4
    assert trainer._steps(100, 32, whole_batches=True) == 3
    with pytest.raises(DatasetError, match="one whole batch: 20 .* batch size 32"):
        trainer._steps(20, 32, whole_batches=True)


def test_an_unresolvable_hostname_is_named_before_jax_joins(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "no-such-host.invalid")
    with pytest.raises(OSError, match="'no-such-host.invalid' does not resolve"):
        runtime._check_hostname_resolves()
    monkeypatch.setattr(socket, "gethostname", lambda: "127.0.0.1")  # resolves
    runtime._check_hostname_resolves()


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        runtime.get_strategy("multiworker")


@pytest.mark.parametrize(
    "config, chief",
    [
        (None, True),
        (
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}},
            True,
        ),
        (
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}},
            False,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "chief", "index": 0},
            },
            True,
        ),
    ],
)
def test_chief_election(monkeypatch, config, chief):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert runtime.is_chief() is chief


def two_host_devices():
    """XLA_FLAGS for two CPU devices in one process, keeping the others
    (the workers compare weights with it: one compiler setting for all)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return f"{flags} --xla_force_host_platform_device_count=2".strip()


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_env(index, ports, engine, cache_home=None):
    """Worker `index`'s environment: TF_CONFIG, or Keras's JAX variables."""
    if engine == "multiworker":
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        task = {"type": "worker", "index": index}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}
    return {
        "KERAS_BACKEND": "jax",
        # The command's compilation cache, in a folder of the test's own.
        "JAX_COMPILATION_CACHE_DIR": "",
        "XDG_CACHE_HOME": str(cache_home),
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(len(ports)),
        "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
    }


# The default NiN (batch norm on) with a two-block trunk: every engine's
# workers run it (nin_28 would take minutes with four processes on two cores).
SMALL_TRUNK = ("--architecture", "[[16, 3], [32, 3]]")


def start_command(out, epochs, extra=()):
    """A small `ninlayers train` of the default NiN with a two-block trunk
    (no strategy yet)."""
    return [
        sys.executable,
        "-m",
        "ninlayers.app.cli",
        "train",
        "--epochs",
        str(epochs),
        "--train-limit",
        "256",
        "--test-limit",
        "64",
        "--batch-size",
        "32",
        "--verbose",
        "0",
        "--output",
        str(out),
        *SMALL_TRUNK,
        *extra,
    ]


def start_workers(out, epochs, extra=(), engine="multiworker"):
    """Starts `ninlayers train` as 2 local workers: TensorFlow's multiworker
    strategy, or (`engine="data-parallel"`) two JAX processes."""
    ports = free_ports(2)
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **cluster_env(index, ports, engine, out.parent / "cache"),
        }
        command = [*start_command(out, epochs, extra), "--strategy", engine]
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finish(processes, timeout=420):
    """Waits for the workers (killing them at the deadline); their outputs."""
    outputs = []
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            remaining = max(1.0, deadline - time.monotonic())
            outputs.append(process.communicate(timeout=remaining))
    finally:
        kill(processes)
    for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return outputs


def kill(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def both_saved(out, other=".worker-1"):
    """The newest epoch both workers have a checkpoint of: they resume there
    (or later), having agreed on it."""
    return min(saved_epoch(out), saved_epoch(out / other))


def digests(outputs):
    found = [
        stdout.split("weights sha256 ")[-1].split()[0].strip(";")
        for stdout, _ in outputs
    ]
    assert len(found[0]) == 64
    return found


@pytest.mark.slow
def test_two_jax_processes_train_as_one_process_over_two_devices(tmp_path):
    """Scale: `--strategy data-parallel` across two JAX processes on
    loopback trains exactly the model one process trains over two devices
    (the same global batches, split the same way), and only process 0
    writes the artifacts."""
    extra = ("--deterministic",)
    workers = start_workers(tmp_path / "run", 2, extra=extra, engine="data-parallel")
    one = subprocess.Popen(
        [*start_command(tmp_path / "one", 2, extra), "--strategy", "data-parallel"],
        env={
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": two_host_devices(),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs = finish([*workers, one])
    chief, worker, alone = digests(outputs)
    assert chief == worker == alone
    # JAX's compiled programs are kept for the next command.
    assert list((tmp_path / "cache").glob("ninlayers/jax/*"))
    assert "worker finished" in outputs[1][0]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == RUN_ARTIFACTS
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == "DataParallel" and metrics["replicas"] == 2


@pytest.mark.slow
def test_two_workers_train_on_an_image_folder_each_reading_its_share(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(["dark", "light"]):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 60, (16, 16)) + 190 * label
            Image.fromarray(pixels.astype(np.uint8)).save(
                tmp_path / "photos" / name / f"{i}.png"
            )
    out = tmp_path / "run"
    extra = ("--image-folder", str(tmp_path / "photos"), "--input-size", "16")
    outputs = finish(start_workers(out, epochs=2, extra=extra))
    chief, worker = digests(outputs)
    assert chief == worker
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and len(metrics["history"]["loss"]) == 2


STRATEGY_CLASS = {
    "multiworker": "MultiWorkerMirroredStrategy",
    "data-parallel": "DataParallel",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine, other", [("multiworker", ".worker-1"), ("data-parallel", ".process-1")]
)
def test_killed_workers_resume_together_from_their_last_epoch(tmp_path, engine, other):
    out = tmp_path / "run"
    processes = start_workers(out, epochs=4, engine=engine)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if both_saved(out, other) >= 1:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in processes), "a worker ended early"
        for process in processes:
            process.send_signal(signal.SIGKILL)
    finally:
        kill(processes)
    killed_at = both_saved(out, other)
    assert 1 <= killed_at < 4
    assert not (out / "metrics.json").exists()

    # The resumed workers train identically, leave together (none outlives
    # the other's heartbeats), and only the chief writes the artifacts.
    outputs = finish(start_workers(out, epochs=4, engine=engine))
    chief, worker = digests(outputs)
    assert chief == worker
    for _, stderr in outputs:
        assert "unhealthy" not in stderr and "heartbeat" not in stderr, stderr[-2000:]
    assert "test accuracy" in outputs[0][0]
    assert "worker finished" in outputs[1][0]
    assert sorted(p.name for p in out.iterdir()) == RUN_ARTIFACTS
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["strategy"] == STRATEGY_CLASS[engine]
    assert metrics["weights_sha256"] == chief
    assert metrics["resumed_from_epoch"] >= killed_at
    assert len(metrics["history"]["loss"]) == 4


# One device, Mirrored over two logical CPUs, and JAX's DataParallel over two
# host devices, from the same weights on the same batches (a small default
# NiN: batch norm on; float32). Each engine runs in its own process.
REPLICAS_TF = """
import json, sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
two_cpus = [tf.config.LogicalDeviceConfiguration()] * 2
tf.config.set_logical_device_configuration(cpu, two_cpus)
import keras, ninlayers
from ninlayers.layers import FusedBatchNormalization
exec(open(sys.argv[1]).read())
keras.utils.set_random_seed(0)
one = build()
start = one.get_weights()
np.savez(sys.argv[2] + "/start.npz", *start)
losses = {"one": one.fit(x, y, **FIT).history["loss"]}
weights = {"one": one.get_weights()}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for name in ("mirrored", "mirrored_per_replica"):
    if name == "mirrored_per_replica":  # each replica its own statistics
        FusedBatchNormalization._across_replicas = lambda self: False
    with strategy.scope():
        model = build(start)
    losses[name] = model.fit(x, y, **FIT).history["loss"]
    weights[name] = model.get_weights()
np.savez(sys.argv[2] + "/tf.npz", *weights["one"])
weights = {k: diff(weights["one"], w) for k, w in weights.items()}
print(json.dumps({"losses": losses, "weights": weights}))
"""

REPLICAS_JAX = """
import json, sys, numpy as np, jax, keras, ninlayers
assert len(jax.devices()) == 2, jax.devices()
exec(open(sys.argv[1]).read())
load = lambda name: list(np.load(sys.argv[2] + name).values())
one = build(load("/start.npz"))
losses = {"one": one.fit(x, y, **FIT).history["loss"]}
with keras.distribution.DataParallel(devices=jax.devices()).scope():
    two = build(load("/start.npz"))
    losses["data_parallel"] = two.fit(x, y, **FIT).history["loss"]
print(json.dumps({"losses": losses, "weights": {
    "data_parallel": diff(one.get_weights(), two.get_weights()),
    "tensorflow_one": diff(one.get_weights(), load("/tf.npz")),
}, "sharding": str(two.trainable_variables[0].value.sharding)}))
"""

REPLICAS_COMMON = """
arch = [{"filters": 8, "kernel_size": 3}, {"filters": 16, "kernel_size": 3}]
rng = np.random.default_rng(0)
x = rng.uniform(size=(64, 16, 16, 1)).astype("float32")
y = rng.integers(0, 4, 64)
FIT = dict(batch_size=16, epochs=2, shuffle=False, verbose=0)

def build(weights=None):
    model = ninlayers.NiN(num_classes=4, input_shape=(16, 16, 1), architecture=arch,
                          precision="float32", gradient_clip_norm=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    if weights is not None:
        model.set_weights(weights)
    return model

def diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b, strict=True))
"""


def run_engine(code, backend, tmp_path, env=None):
    script = tmp_path / f"replicas_{backend}.py"
    common = tmp_path / "replicas_common.py"
    script.write_text(code)
    common.write_text(REPLICAS_COMMON)
    result = subprocess.run(
        [sys.executable, str(script), str(common), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **(env or {}),
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_batch_norm_across_replicas_equals_one_device_on_both_engines(tmp_path):
    """Scale: Mirrored and JAX's DataParallel normalise with the global
    batch's statistics, so both equal one device, and each other."""
    tf_run = run_engine(REPLICAS_TF, "tensorflow", tmp_path)
    jax_run = run_engine(
        REPLICAS_JAX,
        "jax",
        tmp_path,
        {"XLA_FLAGS": two_host_devices()},
    )
    one = tf_run["losses"]["one"]
    for losses in (
        tf_run["losses"]["mirrored"],
        jax_run["losses"]["one"],
        jax_run["losses"]["data_parallel"],
    ):
        assert losses == pytest.approx(one, rel=1e-5)
    assert tf_run["weights"]["mirrored"] < 1e-5
    assert jax_run["weights"]["data_parallel"] < 1e-5
    assert jax_run["weights"]["tensorflow_one"] < 1e-5
    assert "'batch': 2" in jax_run["sharding"]  # the mesh spans both devices
    # Per-replica statistics (Keras's default) train another model: the
    # comparison can tell the two apart.
    assert tf_run["weights"]["mirrored_per_replica"] > 1e-3
