"""Where a training step's time goes, against the bfloat16 ceiling.

The script behind docs/measurements/train-step-profile*.json; the same as
`ninlayers benchmark --kernels --steps 20 --repeats 15`
(`ninlayers.app.kernels`, whose docstring says what is measured), for
`NiN()` at batch 64 unless told another architecture and batch size:

    python benchmarks/train_step_profile.py \
        --json docs/measurements/train-step-profile.json
    python benchmarks/train_step_profile.py --architecture nin_28_narrow \
        --batch-size 128 --json step-profile-narrow.json
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ninlayers.app import artifacts  # noqa: E402
from ninlayers.app.kernels import run_kernel_profile  # noqa: E402


def main(
    steps: int, repeats: int, json_path: str | None, architecture: str, batch: int
) -> dict:
    result = run_kernel_profile(
        steps, repeats, architecture=architecture, batch_size=batch
    )
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None)
    parser.add_argument("--architecture", default="nin_28")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    main(args.steps, args.repeats, args.json, args.architecture, args.batch_size)
