"""Crash-safe resume: kills at every kind of write point, a full disk,
damaged checkpoints, another run's backup, and two runs in one folder."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import RUN_ARTIFACTS
from ninlayers.app import cli, lock, trainer
from ninlayers.app.backup import RunBackup
from ninlayers.errors import TrainingError

HERE = Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
TINY = [[8, 3]]
ARGS = [
    "train",
    "--train-limit",
    "256",
    "--test-limit",
    "64",
    "--epochs",
    "3",
    "--architecture",
    json.dumps(TINY),
    "--verbose",
    "0",
]
# Write events of a run (see fault_driver.py): each epoch's checkpoint is two
# atomic writes of three events (fsync, rename, clean-up), the third epoch's
# also removes the first's two files; the artifacts come after. (A second
# checkpoint half written, event 7, is the first's case with an older one to
# fall back to, which test_a_damaged_checkpoint_falls_back_to_the_one_before
# covers in-process.)
KILL_POINTS = {
    1: "first checkpoint half written",
    4: "first checkpoint's state half written",
    12: "second checkpoint complete, clean-up pending",
    19: "pruning the first checkpoint, one of two files gone",
    21: "writing model.keras after the last epoch",
}


def run_cli(out, *prefix, args=ARGS):
    command = [sys.executable, *prefix, *args, "--output", str(out)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def resume(out):
    """The same command again, in this process (the state is all on disk):
    its exit status."""
    return cli.main([*ARGS, "--output", str(out)])


def driver(*fault):
    return [str(HERE / "fault_driver.py"), *map(str, fault)]


def command():
    return ["-m", "ninlayers.app.cli"]


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if "ninlayers" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def assert_completed(out, epochs=3):
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == epochs
    assert metrics["epochs_this_run"] == epochs - metrics["resumed_from_epoch"]
    assert sorted(p.name for p in out.iterdir()) == RUN_ARTIFACTS
    keras.saving.load_model(out / "model.keras")
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("event", list(KILL_POINTS), ids=list(KILL_POINTS.values()))
def test_a_kill_at_any_write_point_resumes_to_all_epochs(tmp_path, event):
    out = tmp_path / "run"
    killed = run_cli(out, *driver("kill", event))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"killed at event {event}" in killed.stdout
    assert not (out / "metrics.json").exists()
    assert resume(out) == 0
    assert_completed(out)


@pytest.mark.slow
def test_a_full_disk_stops_in_one_line_and_keeps_the_last_backup(tmp_path):
    out = tmp_path / "run"
    # From the second epoch's first write on, no file may exceed 4 KiB: the
    # second checkpoint (tens of KiB) cannot be written.
    full = run_cli(out, *driver("fsize", 7, 4096))
    assert full.returncode == 2, full.stderr[-3000:]
    line = error_line(full)
    assert "File too large" in line and "backup of epoch 2 is kept" in line
    assert sorted(p.name for p in (out / "backup").iterdir()) == [
        "epoch-0001.json",
        "epoch-0001.keras",
        "epoch-0002.json",
        "epoch-0002.keras",
    ]
    assert resume(out) == 0
    assert assert_completed(out)["resumed_from_epoch"] == 2


# In-process runs: write_artifacts fails, as a crash after the last epoch
# would, so the backup stays for the next call.


class Crash(Exception):
    pass


def train(out, **overrides):
    settings = dict(
        recipe="tutorial",
        output_dir=out,
        epochs=2,
        architecture=TINY,
        train_limit=128,
        test_limit=32,
        verbose=0,
    )
    return trainer.train(**{**settings, **overrides})


def crashed_run(out, monkeypatch, **overrides):
    def crash(*args, **kwargs):
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "write_artifacts", crash)
        with pytest.raises(Crash):
            train(out, **overrides)
    return sorted(p.name for p in (out / "backup").iterdir())


def test_a_backup_of_another_run_is_refused_until_restart(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert crashed_run(out, monkeypatch) == [
        "epoch-0001.json",
        "epoch-0001.keras",
        "epoch-0002.json",
        "epoch-0002.keras",
    ]
    for change, named in [
        ({"learning_rate": 0.5}, "learning_rate: 0.001 there, 0.5 now"),
        ({"seed": 1}, "seed: 0 there, 1 now"),
        ({"architecture": [[4, 3]]}, "architecture"),
        ({"recipe": "default"}, "recipe"),
        ({"epochs": 3}, "epochs: 2 there, 3 now"),
    ]:
        with pytest.raises(TrainingError) as info:
            train(out, **change)
        message = str(info.value)
        assert named in message and "backup" in message
        assert "--restart" in message and "\n" not in message
    # Refusing deleted nothing; the same settings resume the run.
    assert len(list((out / "backup").iterdir())) == 4
    metrics = train(out)
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_this_run"] == 0
    assert len(metrics["history"]["loss"]) == 2
    # The network trained, not the recipe's ("fashion_mnist").
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["architecture"] == TINY != saved["recipe"]["architecture"]


def test_restart_deletes_the_backup_and_starts_over(tmp_path, monkeypatch):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch)
    metrics = train(out, learning_rate=0.5, restart=True)
    assert metrics["resumed_from_epoch"] == 0
    assert metrics["recipe"]["learning_rate"] == 0.5


@pytest.mark.parametrize("damage", ["truncate weights", "garble state", "empty state"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(
    tmp_path, monkeypatch, damage
):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch)
    backup = out / "backup"
    if damage == "truncate weights":
        weights = backup / "epoch-0002.keras"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garble state":
        (backup / "epoch-0002.json").write_text('{"epoch": 2, "weig')
    else:
        (backup / "epoch-0002.json").write_text("")
    with pytest.warns(UserWarning, match="epoch-0002.json"):
        metrics = train(out)
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs_this_run"] == 1
    assert len(metrics["history"]["loss"]) == 2


def test_a_backup_with_no_good_checkpoint_starts_over_with_a_warning(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch, epochs=1)
    (out / "backup" / "epoch-0001.keras").write_bytes(b"PK not a zip")
    with pytest.warns(UserWarning, match="damaged checkpoint epoch-0001.json"):
        metrics = train(out, epochs=1)
    assert metrics["resumed_from_epoch"] == 0 and metrics["epochs_this_run"] == 1


def test_a_checkpoint_that_matches_its_digest_but_cannot_load_is_refused(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch, epochs=1)

    def fail(*args, **kwargs):
        raise ValueError("layer count mismatch")

    monkeypatch.setattr(keras.Model, "load_weights", fail)
    with pytest.warns(UserWarning, match="layer count mismatch"):
        with pytest.raises(TrainingError, match="--restart"):
            train(out, epochs=1)


def test_an_old_keras_backup_is_refused_not_guessed(tmp_path):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1}')
    with pytest.raises(TrainingError, match="older format.*--restart"):
        train(out)


def test_history_and_epoch_come_from_one_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch, epochs=2)
    state = json.loads((out / "backup" / "epoch-0002.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2
    assert state["weights"] == "epoch-0002.keras"


def test_backup_refuses_a_changed_fingerprint_in_one_line(tmp_path):
    callback = RunBackup(tmp_path, {"seed": 1, "x": [1, 2]})
    with pytest.raises(TrainingError) as info:
        callback._refuse_foreign({"fingerprint": {"seed": 0, "x": [1, 2]}})
    assert str(info.value).count("seed") == 1 and "x:" not in str(info.value)
    callback._refuse_foreign({"fingerprint": {"seed": 1, "x": [1, 2]}})


# Two runs, one folder.

HOLD_LOCK = """
import sys, time
from ninlayers.app.lock import OutputLock
with OutputLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError) as info:
            train(out)
        message = str(info.value)
        assert f"process {holder.pid}" in message and "--output" in message
        assert not (out / "backup").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder died (SIGKILL) and left its lock file: it is taken over.
    assert (out / lock.LOCK_FILE).exists()
    assert train(out, epochs=1)["epochs_this_run"] == 1
    assert not (out / lock.LOCK_FILE).exists()


def test_the_command_refuses_a_folder_in_use_with_status_2(tmp_path):
    out = tmp_path / "run"
    with lock.OutputLock(out):
        result = run_cli(out, *command())
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("ninlayers: error:") and f"process {os.getpid()}" in line


def test_lock_is_exclusive_and_released(tmp_path):
    with lock.OutputLock(tmp_path):
        with pytest.raises(TrainingError, match="in use"):
            lock.OutputLock(tmp_path).__enter__()
    with lock.OutputLock(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_nan_guard_keeps_the_good_checkpoint(tmp_path):
    callback = RunBackup(tmp_path, {}, guard=type("Guard", (), {"bad": (2, 1, "")}))
    callback.on_epoch_end(1, {"loss": np.nan})
    assert list(tmp_path.iterdir()) == []


def test_starting_over_discards_damaged_checkpoints_before_writing_new_ones(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    crashed_run(out, monkeypatch, epochs=3)
    for name in ("epoch-0002.keras", "epoch-0003.keras"):
        (out / "backup" / name).write_bytes(b"damaged")
    seen = []
    save = RunBackup._save

    def save_and_look(self, epoch):
        save(self, epoch)
        seen.append(sorted(p.name for p in self.directory.glob("*.json")))

    monkeypatch.setattr(RunBackup, "_save", save_and_look)
    # Starting over, the damaged epochs 2 and 3 must not outrank (and prune)
    # the new epoch 1.
    with pytest.warns(UserWarning, match="damaged checkpoint"):
        crashed_run(out, monkeypatch, epochs=3)
    assert seen[0] == ["epoch-0001.json"]
    assert seen[-1] == ["epoch-0002.json", "epoch-0003.json"]


def _terminate_after_first_epoch(out, prefix):
    """Starts a long run, sends SIGTERM once its first checkpoint exists."""
    import time

    args = ["train", "--train-limit", "512", "--test-limit", "64"]
    args += ["--epochs", "6", "--architecture", json.dumps(TINY), "--verbose", "0"]
    command = [sys.executable, *prefix, *args, "--output", str(out)]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not list((out / "backup").glob("*.json")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr, time.monotonic() - sent, args


@pytest.mark.slow
@pytest.mark.parametrize(
    "prefix",
    # `ninlayers.app.cli --backend jax` runs the command in a second process
    # (Keras is imported already), which the SIGTERM must reach.
    [["-m", "ninlayers_cli"], ["-m", "ninlayers.app.cli", "--backend", "jax"]],
    ids=["tensorflow", "jax in a second process"],
)
def test_sigterm_stops_in_one_line_keeping_the_backup_and_the_command_resumes(
    tmp_path, prefix
):
    """Reliability III: what a batch scheduler sends before SIGKILL."""
    out = tmp_path / "run"
    status, stderr, seconds, args = _terminate_after_first_epoch(out, prefix)
    assert status == 143, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("ninlayers")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "resumes" in lines[0]
    assert "Traceback" not in stderr
    assert seconds < 60  # an epoch of this run takes well under a second
    assert not (out / "metrics.json").exists()
    # The last complete epoch's checkpoint, whole: both of its files.
    kept = sorted(p.stem for p in (out / "backup").glob("epoch-*.json"))
    assert kept and (out / "backup" / f"{kept[-1]}.keras").is_file()
    rerun = subprocess.run(
        [sys.executable, *prefix, *args, "--output", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and len(metrics["history"]["loss"]) == 6


def crash_at_step_checkpoint(monkeypatch, position):
    """Makes `RunBackup._save` raise `Crash` right after writing `position`."""
    save = RunBackup._save

    def save_then_crash(self, epoch, step=0):
        save(self, epoch, step)
        if (epoch, step) == position:
            raise Crash

    monkeypatch.setattr(RunBackup, "_save", save_then_crash)


def count_steps(monkeypatch):
    steps = []
    on_batch_end = RunBackup.on_train_batch_end

    def counting(self, batch, logs=None):
        steps.append(batch)
        on_batch_end(self, batch, logs)

    monkeypatch.setattr(RunBackup, "on_train_batch_end", counting)
    return steps


@pytest.mark.parametrize("backup_every, rerun_steps", [(3, 4), (None, 7)])
def test_a_backup_every_n_steps_resumes_within_the_epoch(
    tmp_path, monkeypatch, backup_every, rerun_steps
):
    """Reliability III: a run stopped within an epoch loses at most N steps
    (7 steps per epoch here: 102 training images after the tutorial's
    validation split, 16 a batch; stopped after step 3 of epoch 2). Resumed
    without `backup_every`, it restarts the epoch from its start."""
    out = tmp_path / "run"
    settings = dict(epochs=2, batch_size=16, backup_every=3)
    with monkeypatch.context() as patch:
        crash_at_step_checkpoint(patch, (1, 3))
        with pytest.raises(Crash):
            train(out, **settings)
    assert sorted(p.name for p in (out / "backup").glob("*.json")) == [
        "epoch-0001-step-000003.json",
        "epoch-0001.json",
    ]
    steps = count_steps(monkeypatch)
    metrics = train(out, **{**settings, "backup_every": backup_every})
    assert len(steps) == rerun_steps
    assert metrics["resumed_from_epoch"] == 1
    assert len(metrics["history"]["loss"]) == 2
    # Either way the run ends after 2 x 7 optimizer steps.
    model = keras.saving.load_model(out / "model.keras")
    assert int(model.optimizer.iterations) == 14


def test_backup_every_must_be_a_positive_number_of_steps(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--output", str(tmp_path), "--backup-every", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "argument --backup-every: must be a positive integer" in err
