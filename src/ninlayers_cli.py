"""The `ninlayers` command's launcher: TensorFlow's start-up lines hidden.

TensorFlow writes its start-up lines (oneDNN, CUDA drivers, `absl`) to the
process's stderr while it is being imported, before any log level applies.
The launcher points file descriptor 2 at `/dev/null` during that import only
(unless `--debug` is given), then runs `ninlayers.app.cli.main`. It lives
outside the `ninlayers` package because importing anything inside the
package imports Keras, and so TensorFlow, first.

Keras chooses its backend once, when it is imported: the launcher reads
`--backend` first and sets `KERAS_BACKEND`, so the command runs on that
backend in this process (`ninlayers.app.cli.main` alone, once Keras is
imported, has to start a new process for it).
"""

from __future__ import annotations

import argparse
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def requested_backend(argv: list[str]) -> str | None:
    """The Keras backend that `--backend` names in the command's arguments.

    Args:
        argv: list of str. The command's arguments, without the program
            name; `--backend` may come before or after the command.

    Returns:
        `"tensorflow"`, `"jax"` or `"torch"`, or `None` when `--backend` is
        absent, has no value or names another backend (the command's own
        parser then refuses it in one line).

    Example:

    >>> requested_backend(["--backend", "jax", "train"])
    'jax'
    >>> requested_backend(["train", "--backend=torch"])
    'torch'
    >>> requested_backend(["train", "--backend", "theano"]) is None
    True
    """
    peek = argparse.ArgumentParser(
        add_help=False, allow_abbrev=False, exit_on_error=False
    )
    peek.add_argument("--backend")
    try:
        backend = peek.parse_known_args(argv)[0].backend
    except argparse.ArgumentError:  # `--backend` without a name
        return None
    return backend if backend in BACKENDS else None


def main() -> int:
    """Runs the `ninlayers` command."""
    backend = requested_backend(sys.argv[1:])
    if backend is not None:
        os.environ["KERAS_BACKEND"] = backend
    if "--debug" not in sys.argv[1:]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import ninlayers.app.cli  # noqa: F401 (imports TensorFlow quietly)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    from ninlayers.app import cli

    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
