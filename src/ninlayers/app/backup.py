"""Crash-safe training state: a kill at any moment leaves a good backup.

`RunBackup` replaces Keras's `BackupAndRestore` in the trainer. After each
epoch it writes a checkpoint in two atomic steps (see `atomic_path`):

1. `epoch-NNNN.keras`: the model with its optimizer's variables (a
   `.keras` file: its weights are built in memory, so a failed write is a
   plain `OSError`; HDF5 writing straight to a full disk can crash);
2. `epoch-NNNN.json`: the epoch, the history up to it, the SHA-256 of the
   weights file and the run's fingerprint. This file is the checkpoint's
   commit: one source of truth for the resumed epoch and its history.

With `save_every_steps=N` it also checkpoints every N steps within an epoch
(`epoch-NNNN-step-SSSSSS.*`: N complete epochs and S steps of the next), so
a run preempted in a long epoch loses at most N steps: the trainer resumes
such a checkpoint by running the rest of its epoch first
(`newest_position`).

It keeps the last `KEEP` checkpoints. On resuming it takes the newest one
whose JSON parses and whose weights match their digest and load, so a
truncated or damaged file falls back to the one before. A backup from a run
with another fingerprint (architecture, recipe, learning rate, seed, data)
is refused rather than resumed. Under `MultiWorkerMirroredStrategy`, and
across JAX processes, the workers agree on the newest epoch they all hold.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ninlayers import _keras_compat, runtime
from ninlayers.app.artifacts import atomic_path, atomic_write_text
from ninlayers.errors import TrainingError
from ninlayers.saving import file_sha256

__all__ = [
    "BACKUP_DIR",
    "KEEP",
    "RunBackup",
    "all_replicas_sum",
    "describe_write_error",
]

#: The backup's directory inside a run's output directory.
BACKUP_DIR = "backup"
#: Checkpoints kept: the newest, and the one before as a fall-back.
KEEP = 2
#: Version of the checkpoint JSON.
FORMAT = 1

_CHECKPOINT = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{6,}))?\.json$")
# What Keras's `BackupAndRestore` (ninlayers 0.2.0's backup) leaves.
_KERAS_BACKUP = ("training_metadata.json", "latest.weights.h5")


def describe_write_error(error: OSError) -> str:
    """`OSError` as one plain line: its reason, then the file if named."""
    reason = error.strerror or str(error).splitlines()[0]
    where = f" ({error.filename})" if error.filename else ""
    return f"{reason}{where}"


class RunBackup(keras.callbacks.Callback):
    """Checkpoints every epoch; restores the newest good one at `fit` start.

    Args:
        directory: path. The backup directory (created when first written).
        fingerprint: dict. What makes two runs the same run; a backup with
            another fingerprint is refused.
        guard: callback or `None`. An object with a `bad` attribute (see
            `StopOnNaN`): no checkpoint is written once it is set.
        restart_hint: str. How the user starts over, named in errors.
        save_every_steps: int or `None`. Also checkpoint every this many
            steps within an epoch (one worker only; `None`: epoch ends only).

    Attributes:
        history: dict. Per-epoch logs of the whole run, resumed ones included.
        resumed_from: int. The epoch the run resumed from (0 when fresh).
        resumed_step: int. Steps of epoch `resumed_from + 1` already done.
    """

    def __init__(
        self,
        directory: Path,
        fingerprint: dict[str, Any],
        guard: Any = None,
        restart_hint: str = "--restart",
        save_every_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.save_every_steps = save_every_steps
        self.resumed_step = 0
        self._offset = 0
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.guard = guard
        self.restart_hint = restart_hint
        self.history: dict[str, list[float]] = {}
        self.resumed_from = 0
        self.last_saved = 0

    # Restoring.

    def _checkpoints(self) -> list[tuple[tuple[int, int], Path]]:
        """`((epoch, step), json path)` of the checkpoints on disk, newest
        first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match:
                found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
        return sorted(found, reverse=True)

    def newest_position(self) -> tuple[int, int]:
        """`(epochs, steps)` of the newest good checkpoint: complete epochs,
        and steps run of the next (`(0, 0)` when there is none)."""
        states = self._good_states()
        if not states:
            return (0, 0)
        return (int(states[0]["epoch"]), int(states[0].get("step", 0)))

    def _read(self, path: Path) -> dict[str, Any] | None:
        """A checkpoint's state, or `None` (with a warning) if it is damaged."""
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            weights = self.directory / state["weights"]
            if state["format"] != FORMAT or file_sha256(weights) != state["sha256"]:
                raise ValueError("its weights do not match their SHA-256")
            return state
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"Skipping damaged checkpoint {path.name} in {self.directory} "
                f"({type(error).__name__}: {str(error)[:120]}); trying an older one.",
                stacklevel=2,
            )
            return None

    def _refuse_foreign(self, state: dict[str, Any]) -> None:
        saved = state.get("fingerprint", {})
        keys = sorted(set(saved) | set(self.fingerprint))
        changed = [k for k in keys if saved.get(k) != self.fingerprint.get(k)]
        if changed:
            now = self.fingerprint
            shown = "; ".join(
                f"{k}: {_short(saved.get(k))} there, {_short(now.get(k))} now"
                for k in changed
            )
            raise TrainingError(
                f"{self.directory} holds the backup of another run ({shown}). "
                f"Run the command that started it to resume it, or add "
                f"{self.restart_hint} to delete it and start over."
            )

    def _good_states(self) -> list[dict[str, Any]]:
        if any((self.directory / name).exists() for name in _KERAS_BACKUP):
            raise TrainingError(
                f"{self.directory} holds a backup in an older format (Keras's "
                "BackupAndRestore, ninlayers 0.2.0) that cannot be checked "
                f"against this run. Add {self.restart_hint} to delete it and "
                "start over."
            )
        states = [s for _, p in self._checkpoints() if (s := self._read(p))]
        if states:
            self._refuse_foreign(states[0])
        return states

    def on_train_begin(self, logs=None):
        states = self._good_states()
        if not self.save_every_steps or _multi_worker(self.model):
            # Steps are resumed only when asked, and by one worker (workers
            # agree on epochs); the newest epoch end is always kept.
            states = [s for s in states if not s.get("step")]
        epochs = _agree(
            [s["epoch"] for s in states], self.params.get("epochs", 0), self.model
        )
        # Without a common epoch (a worker was killed before its first
        # checkpoint) every worker starts over.
        states = [s for s in states if s["epoch"] in epochs]
        for state in states:
            try:
                self._restore(state)
                self._discard_after((state["epoch"], state.get("step", 0)))
                return
            except (OSError, ValueError) as error:
                warnings.warn(
                    f"Cannot load checkpoint of epoch {state['epoch']} in "
                    f"{self.directory} ({str(error)[:120]}); trying an older one.",
                    stacklevel=2,
                )
        if states:
            raise TrainingError(
                f"No checkpoint in {self.directory} could be restored. Add "
                f"{self.restart_hint} to delete it and start over."
            )
        self._discard_after((0, 0))  # starting over: none of them is this run's

    def _discard_after(self, position: tuple[int, int]) -> None:
        """Removes the checkpoints after `(epoch, step)` (damaged ones, or
        ones other workers lack), so that pruning never keeps them over the
        checkpoints this run writes."""
        for number, path in self._checkpoints():
            if number > position:
                path.unlink(missing_ok=True)
                path.with_suffix(".keras").unlink(missing_ok=True)

    def _restore(self, state: dict[str, Any]) -> None:
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.directory / state["weights"])
        epoch = int(state["epoch"])
        self.history = {k: list(v[:epoch]) for k, v in state["history"].items()}
        self.resumed_from = self.last_saved = epoch
        self.resumed_step = int(state.get("step", 0))
        _keras_compat.set_initial_epoch(self.model, epoch)

    # Saving.

    def on_epoch_begin(self, epoch, logs=None):
        # The steps of this epoch run before a mid-epoch checkpoint resumed.
        resumed = epoch == self.resumed_from and self.resumed_step
        self._offset = self.resumed_step if resumed else 0
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        every = self.save_every_steps
        if not every or (self.guard is not None and self.guard.bad is not None):
            return
        step = self._offset + batch + 1
        if step % every or batch + 1 >= self.params.get("steps", 0):
            return  # the epoch's end saves its own checkpoint
        try:
            self._save(self._epoch, step)
        except OSError as error:
            self._stop_on_write_error(error)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.bad is not None:
            return
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        try:
            self._save(epoch + 1)
        except OSError as error:
            self._stop_on_write_error(error)

    def _stop_on_write_error(self, error: OSError) -> None:
        self.model.stop_training = True
        kept = (
            f"the backup of epoch {self.last_saved} is kept"
            if self.last_saved
            else "no epoch was saved"
        )
        raise TrainingError(
            f"Cannot write the backup in {self.directory}: "
            f"{describe_write_error(error)}. Training stopped; {kept}. "
            "Free some space and run the same command to resume."
        ) from error

    def _save(self, epoch: int, step: int = 0) -> None:
        """Checkpoints `epoch` complete epochs and `step` steps of the next."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "")
        weights = self.directory / f"{stem}.keras"
        with atomic_path(weights) as tmp:
            self.model.save(tmp)
        state = {
            "format": FORMAT,
            "epoch": epoch,
            "step": step,
            "weights": weights.name,
            "sha256": file_sha256(weights),
            "history": self.history,
            "fingerprint": self.fingerprint,
        }
        atomic_write_text(self.directory / f"{stem}.json", json.dumps(state, indent=1))
        self.last_saved = epoch
        self._prune()

    def _prune(self) -> None:
        """Removes all but the newest `KEEP` checkpoints (and the newest
        epoch end's), and stray files."""
        found = self._checkpoints()
        ends = [p for (_, step), p in found if not step]
        keep = {p.name for _, p in found[:KEEP]} | {p.name for p in ends[:1]}
        keep |= {name.replace(".json", ".keras") for name in keep}
        for path in self.directory.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def delete(self) -> None:
        """Removes the backup (once every artifact is written)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def all_replicas_sum(strategy: Any, values: np.ndarray) -> np.ndarray:
    """Sums `values` over every replica of a `tf.distribute` strategy (each
    replica adds this worker's `values` once); a collective all workers call."""
    import tensorflow as tf

    def step():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(values))

    summed = tf.function(lambda: strategy.run(step))()
    return np.asarray(strategy.experimental_local_results(summed)[0])


def _agree(epochs: list[int], total: int, model: keras.Model) -> set[int]:
    """The checkpoint epochs every worker holds (all of them when alone).

    Each worker (each replica under `tf.distribute`, each process on JAX)
    adds a one-hot count of the epochs it holds (up to `total`, the same
    on every worker); an epoch is common when its count reaches the number
    of them.
    """
    counts = np.zeros(total + 1, "float32")
    counts[[e for e in epochs if e <= total]] = 1.0
    processes = runtime.jax_processes()
    if processes > 1:
        from jax.experimental import multihost_utils

        summed = np.asarray(multihost_utils.process_allgather(counts)).sum(axis=0)
        needed = processes
    elif _multi_worker(model):
        strategy = _keras_compat.trainer_strategy(model)
        summed = all_replicas_sum(strategy, counts)
        needed = strategy.num_replicas_in_sync
    else:
        return set(epochs)
    common = np.flatnonzero(summed >= needed)
    return {int(e) for e in common} & set(epochs)


def _multi_worker(model: keras.Model) -> bool:
    if runtime.jax_processes() > 1:
        return True
    strategy = _keras_compat.trainer_strategy(model)
    return strategy is not None and _keras_compat.in_multi_worker_mode(strategy)
