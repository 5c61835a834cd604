"""Runs the `ninlayers` command with a fault injected at a write event.

    python fault_driver.py kill N ARGS...
    python fault_driver.py fsize N LIMIT ARGS...

A write event is a call of `os.fsync`, `os.replace` or `os.unlink`: every
file ninlayers writes goes through them (a temporary file, flushed, then
renamed; old checkpoints unlinked). `kill` sends SIGKILL to this process at
the Nth event; when that event is an `fsync`, the file is first cut to half
its size, as a kill in the middle of writing it would leave it. `fsize`
limits the size of any file written from the Nth event on to LIMIT bytes,
as a full disk does (writes then fail with EFBIG).
"""

import os
import resource
import signal
import sys

from ninlayers.app import cli

count = 0


def event(name, fd=None, mode="kill", nth=0, limit=None):
    global count
    count += 1
    if count != nth:
        return
    if mode == "kill":
        if fd is not None:  # the writer may hold it read-only: cut by path
            os.truncate(f"/proc/self/fd/{fd}", os.fstat(fd).st_size // 2)
        print(f"fault_driver: killed at event {count} ({name})", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def wrap(name, function, fault, takes_fd=False):
    def wrapped(*args, **kwargs):
        event(name, args[0] if takes_fd else None, **fault)
        return function(*args, **kwargs)

    return wrapped


def main():
    mode, nth = sys.argv[1], int(sys.argv[2])
    limit = int(sys.argv[3]) if mode == "fsize" else None
    argv = sys.argv[4:] if mode == "fsize" else sys.argv[3:]
    fault = {"mode": mode, "nth": nth, "limit": limit}
    os.fsync = wrap("fsync", os.fsync, fault, takes_fd=True)
    os.replace = wrap("replace", os.replace, fault)
    os.unlink = wrap("unlink", os.unlink, fault)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
