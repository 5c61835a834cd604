"""The same oneDNN primitives under TensorFlow and under PyTorch, shape by shape.

TensorFlow and PyTorch each ship their own oneDNN (its version and
threading runtime differ), and both run NiN's convolutions through it. This
script runs, in one child process per framework with `ONEDNN_VERBOSE=1`
(which makes oneDNN print each primitive's execution time), `--steps`
training steps of the same network at the same batch: `NiN()` on
TensorFlow and the benchmark's plain PyTorch peer
(`ninlayers.app._torch_peer`; bfloat16, channels-last, Adam), after a
warm-up of as many steps. TensorFlow runs one kernel at a time
(`inter_op_parallelism_threads=1`), as PyTorch does, so each primitive has
both cores. It prints each side's oneDNN version and runtime, its oneDNN
time per step by primitive and pass, and, for every convolution both run
with the same shape and pass, the two times side by side: the same work in
the two libraries' kernels. Rounds alternate the two children:

    python benchmarks/onednn_kernels.py --rounds 3 \
        --json docs/measurements/onednn-kernels-amx.json
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_START, _END = "ninlayers-onednn-start", "ninlayers-onednn-end"


def _tensorflow_child(steps: int, batch: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    import ninlayers
    from ninlayers.app import data
    from ninlayers.app.benchmark import benchmark_images

    x, y, _ = benchmark_images(batch * steps)
    model = ninlayers.NiN()
    model.compile()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    dataset = data.prefetched(dataset)
    model.fit(dataset, epochs=1, verbose=0)
    print(_START, flush=True)
    model.fit(dataset, epochs=1, verbose=0)
    print(_END, flush=True)


def _torch_child(steps: int, batch: int) -> None:
    from ninlayers.app._torch_peer import peer, train_epoch
    from ninlayers.app.benchmark import benchmark_images

    x, y, net, optimizer = peer(*benchmark_images(batch * steps)[:2])
    train_epoch(net, optimizer, x, y, batch)
    print(_START, flush=True)
    train_epoch(net, optimizer, x, y, batch)
    print(_END, flush=True)


def _run_child(side: str, steps: int, batch: int) -> dict:
    """One child's oneDNN info and execution times per step, by
    (primitive, pass) and by (primitive, pass, shape)."""
    command = [sys.executable, __file__, "--child", side]
    command += ["--steps", str(steps), "--batch-size", str(batch)]
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env=env
    ).stdout
    info, by_kind, by_shape = [], collections.Counter(), collections.Counter()
    inside = False
    for line in out.splitlines():
        if line.startswith("onednn_verbose") and ",info," in line:
            if "oneDNN v" in line or "runtime:" in line:
                info.append(line.split(",info,", 1)[1])
        inside = (inside or line == _START) and line != _END
        fields = line.split(",")
        if not inside or "exec" not in fields:
            continue
        i = fields.index("exec")
        kind, prop, shape = fields[i + 2], fields[i + 4], fields[-2]
        ms = float(fields[-1]) / steps
        by_kind[f"{kind} {prop}"] += ms
        if kind == "convolution":
            by_shape[f"{prop} {shape}"] += ms
    return {
        "info": sorted(set(info)),
        "ms_per_step_by_primitive": dict(by_kind.most_common()),
        "convolution_ms_per_step_by_shape": dict(by_shape.most_common()),
    }


def main(rounds: int, steps: int, batch: int, json_path: str | None) -> dict:
    from ninlayers.app import artifacts, machine

    result = {"machine": machine.describe(), "steps": steps, "batch_size": batch}
    result.update(tensorflow=[], torch=[])
    for r in range(rounds):
        for side in ("tensorflow", "torch"):
            result[side].append(_run_child(side, steps, batch))
        print(f"round {r + 1} of {rounds} done", flush=True)
    result["medians"] = {
        side: _medians(result[side]) for side in ("tensorflow", "torch")
    }
    print(format_result(result))
    if json_path:
        artifacts.write_json(json_path, result)
    return result


def _medians(runs: list[dict]) -> dict:
    medians = {"info": runs[0]["info"]}
    for key in ("ms_per_step_by_primitive", "convolution_ms_per_step_by_shape"):
        names = {name for run in runs for name in run[key]}
        medians[key] = {
            name: statistics.median(run[key].get(name, 0.0) for run in runs)
            for name in sorted(names)
        }
    return medians


def format_result(result: dict) -> str:
    """Each side's info and primitives, then the convolutions they share."""
    from ninlayers.app.benchmark import machine_line

    tf_side, pt_side = result["medians"]["tensorflow"], result["medians"]["torch"]
    lines = [machine_line(result["machine"])]
    for name, side in (("TensorFlow", tf_side), ("PyTorch", pt_side)):
        lines.append(f"{name}: {'; '.join(side['info'])}")
        kinds = side["ms_per_step_by_primitive"]
        for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {kind:44s} {ms:7.2f} ms per step")
        lines.append(f"  {'all oneDNN primitives':44s} {sum(kinds.values()):7.2f}")
    tf_shapes = tf_side["convolution_ms_per_step_by_shape"]
    pt_shapes = pt_side["convolution_ms_per_step_by_shape"]
    shared = sorted(set(tf_shapes) & set(pt_shapes), key=lambda s: -tf_shapes[s])
    lines.append("Convolutions both run, ms per step (TensorFlow / PyTorch):")
    for shape in shared:
        tf_ms, pt_ms = tf_shapes[shape], pt_shapes[shape]
        lines.append(
            f"  {shape:70s} {tf_ms:6.2f} / {pt_ms:6.2f} = {tf_ms / pt_ms:.2f}x"
        )
    tf_sum = sum(tf_shapes[s] for s in shared)
    pt_sum = sum(pt_shapes[s] for s in shared)
    lines.append(
        f"  {'all of them':70s} {tf_sum:6.2f} / {pt_sum:6.2f} = {tf_sum / pt_sum:.2f}x"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--child", choices=("tensorflow", "torch"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child == "tensorflow":
        _tensorflow_child(args.steps, args.batch_size)
    elif args.child == "torch":
        _torch_child(args.steps, args.batch_size)
    else:
        main(args.rounds, args.steps, args.batch_size, args.json)
