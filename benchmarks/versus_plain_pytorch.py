"""TensorFlow's NiN training step against plain PyTorch's, kernel by kernel.

Alternates, round by round in one run, two measurements of the same
network at the same batch size (`NiN()` and the benchmark's plain PyTorch
peer, `ninlayers.app._torch_peer`: bfloat16, channels-last, Adam):

- TensorFlow: `NiN()`'s training steps under TensorFlow's profiler
  (`ninlayers.app.kernels.profile_steps`), in this process, and the same
  steps' wall time without the profiler.
- PyTorch: the peer's training steps under PyTorch's profiler, then their
  wall time without it, in a child process (TensorFlow's and PyTorch's
  oneDNN and OpenMP in one process have crashed).

Each side's kernel time per step is summed by the same kinds: the
convolutions and matrix products (forward and both gradients: PyTorch's
`convolution_backward` computes the input's and the filter's in one op),
batch norm, ReLU and its gradient, pooling, the optimizer, dtype casts,
the rest. PyTorch runs one op at a time, so its kinds add up to less than
its step, the difference being Python and dispatch between the ops;
TensorFlow runs two kernels at once, so its kinds can add up to more.
Prints every round and the medians, and the ratio of PyTorch's step to
TensorFlow's with and without the profilers:

    python benchmarks/versus_plain_pytorch.py --rounds 3 \
        --json docs/measurements/versus-plain-pytorch-amx.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

#: TensorFlow kernel kind (`ninlayers.app.kernels.KINDS`) -> the kinds
#: both sides share.
TF_KINDS = {
    "convolution forward": "convolutions and matmuls",
    "convolution backward, input": "convolutions and matmuls",
    "convolution backward, filter": "convolutions and matmuls",
    "matmul (1x1 convolutions)": "convolutions and matmuls",
    "batch norm": "batch norm",
    "ReLU gradient": "ReLU",
    "pooling": "pooling",
}

#: TensorFlow kernels among `kernels.profile_steps`' "other" with a kind.
TF_OTHERS = {"ResourceApplyAdam": "optimizer", "Cast": "casts"}

#: PyTorch op (with its own time) -> kind; the rest is "other".
TORCH_KINDS = {
    "aten::mkldnn_convolution": "convolutions and matmuls",
    "aten::convolution_backward": "convolutions and matmuls",
    "aten::native_batch_norm": "batch norm",
    "aten::_batch_norm_with_update": "batch norm",
    "aten::native_batch_norm_backward": "batch norm",
    "aten::batch_norm_backward": "batch norm",
    "aten::relu": "ReLU",
    "aten::clamp_min": "ReLU",
    "aten::threshold_backward": "ReLU",
    "aten::max_pool2d_with_indices": "pooling",
    "aten::max_pool2d_with_indices_backward": "pooling",
    "aten::copy_": "casts",
    "aten::_to_copy": "casts",
    # Adam, one parameter at a time (PyTorch's default on CPU).
    "Optimizer.step#Adam.step": "optimizer",
    "aten::lerp_": "optimizer",
    "aten::addcdiv_": "optimizer",
    "aten::addcmul_": "optimizer",
    "aten::sqrt": "optimizer",
    "aten::div": "optimizer",
    "aten::mul_": "optimizer",
    "aten::add_": "optimizer",
}


def _torch_child(data_path: str, batch: int, steps: int) -> dict:
    """The peer's training steps under PyTorch's profiler (self time of
    each op, by kind), then their wall time without it."""
    from torch.profiler import ProfilerActivity, profile

    from ninlayers.app._torch_peer import peer, train_epoch

    data = np.load(data_path)  # `steps` batches
    x, y, net, optimizer = peer(data["x"], data["y"])

    def run() -> float:
        start = time.perf_counter()
        train_epoch(net, optimizer, x, y, batch)
        return time.perf_counter() - start

    run()  # warm-up: oneDNN's primitives
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = run()
    kinds = collections.Counter()
    others = collections.Counter()
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / steps
        kind = TORCH_KINDS.get(event.key)
        if kind is None and event.key.startswith("aten::_foreach_"):
            kind = "optimizer"
        kinds[kind or "other"] += ms
        if kind is None:
            others[event.key] += ms
    return {
        "wall_ms_per_step": 1000 * run() / steps,
        "profiled_wall_ms_per_step": 1000 * profiled / steps,
        "kernel_ms_per_step_by_kind": dict(kinds.most_common()),
        "other_ops_ms_per_step": dict(others.most_common(12)),
    }


def _tensorflow(model, x, y, batch: int, steps: int) -> dict:
    """`NiN()`'s steps under TensorFlow's profiler, by the shared kinds,
    then their wall time without it."""
    import tensorflow as tf

    from ninlayers.app import data, kernels

    profile = kernels.profile_steps(model, steps, batch)
    kinds = collections.Counter()
    for kind, ms in profile["kernel_ms_per_step_by_kind"].items():
        kinds[TF_KINDS.get(kind, "other")] += ms
    for name, ms in profile["other_kernels_ms_per_step"].items():
        if name in TF_OTHERS:
            kinds[TF_OTHERS[name]] += ms
            kinds["other"] -= ms
    dataset = data.prefetched(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    )
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return {
        "wall_ms_per_step": 1000 * (time.perf_counter() - start) / steps,
        "profiled_wall_ms_per_step": profile["wall_ms_per_step"],
        "kernel_ms_per_step_by_kind": dict(kinds.most_common()),
    }


def main(
    rounds: int, steps: int, batch: int, json_path: str | None, inter_op: int
) -> dict:
    import tensorflow as tf

    if inter_op:  # before TensorFlow's first op
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    import ninlayers
    from ninlayers.app import artifacts, machine
    from ninlayers.app.benchmark import benchmark_images

    x, y, source = benchmark_images(batch * steps)
    model = ninlayers.NiN()
    model.compile()
    result = {"machine": machine.describe(), "data": source, "batch_size": batch}
    result.update(steps=steps, tensorflow_inter_op_threads=inter_op or "default")
    result.update(tensorflow=[], torch=[])
    with tempfile.TemporaryDirectory(prefix="ninlayers-versus-") as directory:
        path = f"{directory}/data.npz"
        np.savez(path, x=x, y=y)
        for r in range(rounds):
            result["tensorflow"].append(_tensorflow(model, x, y, batch, steps))
            child = [sys.executable, __file__, "--child", path]
            child += ["--batch-size", str(batch), "--steps", str(steps)]
            out = subprocess.run(child, check=True, capture_output=True, text=True)
            result["torch"].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}:\n{_round_lines(result, r)}", flush=True)
    result["medians"] = _medians(result)
    print(f"medians:\n{_table(result['medians'])}")
    if json_path:
        artifacts.write_json(json_path, result)
    return result


def _medians(result: dict) -> dict:
    """Each side's medians over the rounds, and plain PyTorch's step over
    TensorFlow's."""
    medians = {}
    for side in ("tensorflow", "torch"):
        runs = result[side]
        kinds = {k for run in runs for k in run["kernel_ms_per_step_by_kind"]}
        medians[side] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("wall_ms_per_step", "profiled_wall_ms_per_step")
        }
        medians[side]["kernel_ms_per_step_by_kind"] = {
            k: statistics.median(
                run["kernel_ms_per_step_by_kind"].get(k, 0.0) for run in runs
            )
            for k in sorted(kinds)
        }
    medians["torch_step_over_tensorflow"] = (
        medians["torch"]["wall_ms_per_step"] / medians["tensorflow"]["wall_ms_per_step"]
    )
    return medians


def _round_lines(result: dict, r: int) -> str:
    one = {side: result[side][r] for side in ("tensorflow", "torch")}
    one["torch_step_over_tensorflow"] = (
        one["torch"]["wall_ms_per_step"] / one["tensorflow"]["wall_ms_per_step"]
    )
    return _table(one)


def _table(sides: dict) -> str:
    """Kind by kind, ms per step on each side, the walls and the ratio."""
    tf_side, pt_side = sides["tensorflow"], sides["torch"]
    tf_kinds = tf_side["kernel_ms_per_step_by_kind"]
    pt_kinds = pt_side["kernel_ms_per_step_by_kind"]
    lines = [f"  {'ms per step':28s} {'TensorFlow':>10s} {'PyTorch':>10s}"]
    for kind in sorted(set(tf_kinds) | set(pt_kinds)):
        tf_ms, pt_ms = tf_kinds.get(kind, 0.0), pt_kinds.get(kind, 0.0)
        lines.append(f"  {kind:28s} {tf_ms:10.1f} {pt_ms:10.1f}")
    lines.append(
        f"  {'all kinds':28s} {sum(tf_kinds.values()):10.1f} "
        f"{sum(pt_kinds.values()):10.1f}"
    )
    for key, label in (
        ("profiled_wall_ms_per_step", "step, profiled"),
        ("wall_ms_per_step", "step"),
    ):
        lines.append(f"  {label:28s} {tf_side[key]:10.1f} {pt_side[key]:10.1f}")
    ratio = sides["torch_step_over_tensorflow"]
    lines.append(f"  PyTorch's step / TensorFlow's: {ratio:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--inter-op",
        type=int,
        default=0,
        help="TensorFlow's inter-op threads (1: one kernel at a time, as "
        "PyTorch runs them; default: TensorFlow's own)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_torch_child(args.child, args.batch_size, args.steps)))
    else:
        main(args.rounds, args.steps, args.batch_size, args.json, args.inter_op)
