"""tf.distribute: strategy choice, chief election, two real workers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import RUN_ARTIFACTS
from ninlayers import runtime


def test_strategy_names():
    assert runtime.get_strategy("default").num_replicas_in_sync == 1
    assert runtime.get_strategy("auto").num_replicas_in_sync == 1  # no GPUs
    mirrored = runtime.get_strategy("mirrored", ["/cpu:0"])
    assert type(mirrored).__name__ == "MirroredStrategy"
    with pytest.raises(ValueError, match="Received: strategy='tpu'"):
        runtime.get_strategy("tpu")


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


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(out, epochs):
    """Starts `ninlayers train --strategy multiworker` as 2 local workers."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        command = [
            sys.executable,
            "-m",
            "ninlayers.app.cli",
            "train",
            "--strategy",
            "multiworker",
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
        ]
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


def saved_epoch(out):
    """The chief's newest checkpoint epoch (0 if none)."""
    names = sorted((out / "backup").glob("epoch-*.json"))
    return int(names[-1].stem.split("-")[1]) if names else 0


def both_saved(out):
    """The newest epoch both workers have a checkpoint of: they resume there
    (or later), having agreed on it."""
    return min(saved_epoch(out), saved_epoch(out / ".worker-1"))


def digests(outputs):
    found = [
        stdout.split("weights sha256 ")[-1].split()[0].strip(";")
        for stdout, _ in outputs
    ]
    assert len(found[0]) == 64
    return found


@pytest.mark.slow
def test_two_workers_train_identically_and_only_the_chief_writes(tmp_path):
    out = tmp_path / "run"
    processes = start_workers(out, epochs=2)
    outputs = finish(processes)
    chief, worker = digests(outputs)
    assert chief == worker
    # The workers leave together: none outlives the other's heartbeats.
    for _, stderr in outputs:
        assert "unhealthy" not in stderr and "heartbeat" not in stderr, stderr[-2000:]
    assert "test accuracy" in outputs[0][0]
    assert "worker finished" in outputs[1][0]
    assert sorted(p.name for p in out.iterdir()) == RUN_ARTIFACTS
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["strategy"] == "MultiWorkerMirroredStrategy"
    assert metrics["weights_sha256"] == chief
    assert len(metrics["history"]["loss"]) == 2


@pytest.mark.slow
def test_killed_workers_resume_together_from_their_last_epoch(tmp_path):
    out = tmp_path / "run"
    processes = start_workers(out, epochs=4)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if both_saved(out) >= 1:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in processes), "a worker ended early"
        for process in processes:
            process.send_signal(signal.SIGKILL)
    finally:
        kill(processes)
    killed_at = both_saved(out)
    assert 1 <= killed_at < 4
    assert not (out / "metrics.json").exists()

    processes = start_workers(out, epochs=4)
    chief, worker = digests(finish(processes))
    assert chief == worker
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= killed_at
    assert len(metrics["history"]["loss"]) == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
