"""Seed recipe vs ninlayers' defaults, side by side: `python benchmarks/speed.py`.

The same as `ninlayers benchmark`; see docs/performance.md for the figures.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ninlayers.app import artifacts  # noqa: E402
from ninlayers.app.benchmark import run_benchmark  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-plain", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run_benchmark(args.images, args.repeats, with_plain=not args.no_plain)
    if args.json:
        artifacts.write_json(args.json, result)
