"""One run per output directory: an advisory lock the kernel releases.

`OutputLock` holds `fcntl.flock` (`msvcrt.locking` where there is no
`fcntl`, as on Windows) on `DIR/.lock` for the length of a run. A
second run into the same directory is refused at once, naming the process
that holds it. The kernel drops the lock when its process ends, however it
ends (SIGKILL included), so a lock left by a dead run is taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import TracebackType

from ninlayers.errors import TrainingError

__all__ = ["LOCK_FILE", "OutputLock"]

#: The lock file inside a locked directory.
LOCK_FILE = ".lock"


class OutputLock:
    """Context manager: holds the lock of `directory`, or raises.

    Example:

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with OutputLock(directory):
    ...     OutputLock(directory).__enter__()
    Traceback (most recent call last):
    ...
    ninlayers.errors.TrainingError: ...is in use by another ninlayers run...

    Raises:
        TrainingError: if another live process holds the lock.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                try:
                    holder = os.read(fd, 200).decode("utf-8", "replace").strip()
                except OSError:  # a locked region cannot be read on Windows
                    holder = ""
                os.close(fd)
                raise TrainingError(
                    f"{self.directory} is in use by another ninlayers run "
                    f"({holder or 'process unknown'}). Wait for it to end, or "
                    "choose another --output."
                ) from None
            # The holder may have removed the file between our open and our
            # lock: then we hold a lock nobody else can see, so retry.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so no one locks a dead file.
        self.path.unlink(missing_ok=True)
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None


def _try_lock(fd: int) -> bool:
    """Takes the lock of `fd` without waiting; `False` if another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)
