"""The `ninlayers` command's launcher: TensorFlow's start-up lines hidden.

TensorFlow writes its start-up lines (oneDNN, CUDA drivers, `absl`) to the
process's stderr while it is being imported, before any log level applies.
The launcher points file descriptor 2 at `/dev/null` during that import only
(unless `--debug` is given), then runs `ninlayers.app.cli.main`. It lives
outside the `ninlayers` package because importing anything inside the
package imports Keras, and so TensorFlow, first.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Runs the `ninlayers` command."""
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
