"""The benchmark's seed model is the seed network, and the run reports ratios."""

import json
import sys

import numpy as np
import pytest

from ninlayers import NiN
from ninlayers.app import benchmark, ceiling, cli
from ninlayers.app.benchmark import seed_model


def test_seed_model_is_the_same_network_as_the_seed_preset():
    seed = seed_model()
    nin = NiN.from_preset("tutorial_fashion_mnist", precision="float32")
    assert seed.count_params() == nin.count_params() == 1_588_198
    seed.set_weights(nin.get_weights())
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        seed.predict(x, verbose=0), nin.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_seconds_per_call_is_per_call_over_every_call():
    import time

    import tensorflow as tf

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
        return tf.zeros((64, 64))

    assert ceiling.seconds_per_call(fn, calls=3) >= 0.01  # per call, not in all
    assert len(calls) == 3


def test_multiply_adds_count_every_convolution_by_hand():
    def block(size, kernel, c_in, filters):  # kxk then two 1x1, at size x size
        return size * size * (kernel * kernel * c_in * filters + 2 * filters**2)

    stages = block(28, 3, 1, 96) + block(13, 3, 96, 256) + block(6, 3, 256, 384)
    seed_head = block(2, 3, 384, 10)  # the seed pools to 2x2 before its head
    assert ceiling.multiply_adds(seed_model()) == stages + seed_head
    assert round((stages + seed_head) / 1e6, 1) == 117.3  # the seed's, measured
    nin = NiN(architecture="nin_28_6x6")  # its head works at 6x6
    assert ceiling.multiply_adds(nin) == stages + block(6, 3, 384, 10)
    assert ceiling.training_flop_per_image(nin) == 6 * ceiling.multiply_adds(nin)


@pytest.mark.parametrize(
    "architecture, batch, blocks",
    [
        ("nin_28", 64, 3),
        ("nin_28_narrow", 128, 3),
        ([[32, 5], [64, 3, 1, "same", None]], 8, 2),
    ],
)
def test_step_profile_counts_every_trunk_convolution(architecture, batch, blocks):
    # `ninlayers benchmark --kernels` times the trunk's convolution shapes one
    # by one; its bound must add up to the model's own multiply-adds.
    from ninlayers.app import kernels as profile

    model = NiN(architecture=architecture)
    per_layer = ceiling.multiply_adds_per_layer(model)
    trunk = sum(v for k, v in per_layer.items() if k.startswith("block"))
    shapes = profile.convolution_shapes(model)
    assert len(shapes) == 2 * blocks  # each block's kxk and its 1x1 shape
    rates = {
        f"{name}, {op}": 250.0
        for name in shapes
        for op in ("forward", "backward, input", "backward, filter")
    }
    ms, gflop = profile.convolution_bound(rates, model, batch)
    assert gflop == pytest.approx(6 * batch * trunk / 1e9)
    assert ms == pytest.approx(gflop / 250.0 * 1000)


def test_step_profile_names_each_block_kernel():
    from ninlayers.app.kernels import convolution_shapes

    model = NiN(architecture=[[32, 5], [64, 3, 1, "same", None]])
    assert convolution_shapes(model) == {
        "block1 5x5": (28, 28, 1, 32, 5, 5),
        "block1 1x1": (28, 28, 32, 32, 1, 1),
        "block2 3x3": (13, 13, 32, 64, 3, 3),
        "block2 1x1": (13, 13, 64, 64, 1, 1),
    }


def test_memory_bound_counts_every_batch_norm_and_relu_by_hand():
    # Each block runs 3 batch norms (forward: x in, y out; backward: dy and
    # x in, dx out) and 3 ReLU gradients (dy and y in, dx out): 24
    # bfloat16 activations of traffic per step.
    from ninlayers.app import streaming

    model = NiN(architecture=[[32, 5], [64, 3, 1, "same", None]])
    shapes = streaming.activation_shapes(model)
    assert shapes == {"block1": (28, 28, 32), "block2": (13, 13, 64)}
    rates = {
        f"{block}, {op}": 10.0
        for block in shapes
        for op in ("batch norm forward", "batch norm backward", "ReLU gradient")
    }
    batch = 8
    activations = 2 * batch * (28 * 28 * 32 + 13 * 13 * 64)  # bytes
    expected_ms = 24 * activations / 10e9 * 1000
    assert streaming.memory_bound(rates, model, batch) == pytest.approx(expected_ms)


@pytest.mark.parametrize(
    "kwargs, norms, relus",
    [
        ({}, 0, 3),  # NiNBlock's default: no batch norm
        ({"use_batch_norm": True}, 3, 3),
        ({"use_batch_norm": True, "final_activation": False}, 2, 2),
        ({"use_batch_norm": True, "activation": "gelu"}, 3, 0),
        ({"num_mlp_layers": 0, "use_batch_norm": True}, 1, 1),
    ],
)
def test_memory_bound_counts_what_a_block_runs(kwargs, norms, relus):
    from ninlayers.app import streaming
    from ninlayers.layers import NiNBlock

    counts = streaming._per_step(NiNBlock(16, 3, **kwargs))
    assert counts == {
        "batch norm forward": norms,
        "batch norm backward": norms,
        "ReLU gradient": relus,
    }


@pytest.mark.slow
def test_benchmark_reports_rates_and_ratios(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # the progress bar
    assert (
        cli.main(
            [
                "benchmark",
                "--images",
                "128",
                "--repeats",
                "1",
                "--no-torch",
                "--no-backends",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    printed = captured.out
    assert "seed" in printed and "ninlayers" in printed
    assert "seed: the NiN tutorial's plain Keras model" in printed  # the label
    result = json.loads((tmp_path / "b.json").read_text())
    # The processor that measured the figures, in print and in the file.
    table = printed[printed.index("machine: ") :]  # after the progress bar
    assert result["machine"]["processor"] in table.splitlines()[0]
    for key in ("train", "predict"):
        rates = result[f"{key}_images_per_second"]
        assert set(rates) >= {"seed", "ninlayers"} and min(rates.values()) > 0
        ratio = result[f"{key}_ratio"]
        assert ratio["seed"] == 1.0
        assert ratio["ninlayers"] == pytest.approx(rates["ninlayers"] / rates["seed"])
    top = result["ceiling"]["bfloat16"]
    assert top == max(result["ceiling"]["gflops"]["bfloat16"].values()) > 0
    for name in ("seed", "ninlayers"):
        gflops = result["train_images_per_second"][name] * 0.704  # GFLOP/image
        assert result["training_gflops"][name] == pytest.approx(gflops, rel=0.01)
        assert result["fraction_of_bfloat16_ceiling"][name] == pytest.approx(
            result["training_gflops"][name] / top
        )
    assert "of the bfloat16 ceiling" in printed
    # The seed again, fed without tf.data's autotuning, and ninlayers over it.
    untuned = result["versus_untuned_seed"]
    for key in ("train", "predict"):
        rates = result[f"{key}_images_per_second"]
        assert untuned[key] == pytest.approx(rates["ninlayers"] / rates["seed_untuned"])
    assert f"training {untuned['train']:.2f}x, predict" in printed
    # The progress bar: the warm-up, the one timed round, the ceiling.
    assert "3/3" in printed
    # Each model predicts at its own default batch, and the table says so.
    assert result["predict_batch_size"] == {"seed": 32, "ninlayers": 128}
    assert "batch 64 (predict 32, ninlayers 128)" in printed


@pytest.mark.slow
def test_kernel_profile_reports_each_kernel_class_against_the_ceiling(tmp_path, capsys):
    args = ["benchmark", "--kernels", "--steps", "2", "--repeats", "1"]
    args += ["--architecture", "nin_28_narrow", "--batch-size", "16"]
    assert cli.main([*args, "--json", str(tmp_path / "k.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "k.json").read_text())
    assert result["machine"]["processor"] in printed.splitlines()[0]
    assert "nin_28_narrow at batch 16" in printed.splitlines()[1]
    assert (result["architecture"], result["batch_size"]) == ("nin_28_narrow", 16)
    kinds = result["profile"]["kernel_ms_per_step_by_kind"]
    assert {"convolution forward", "batch norm", "pooling"} <= set(kinds)
    assert min(kinds.values()) > 0 and result["profile"]["wall_ms_per_step"] > 0
    from ninlayers.app.kernels import convolution_bound, convolution_shapes

    model = NiN(architecture="nin_28_narrow")
    gflops = result["convolution_gflops"]
    assert (
        len(gflops) == 3 * len(convolution_shapes(model)) and min(gflops.values()) > 0
    )
    assert "block1 1x1, backward, filter" in gflops
    ms, flop = convolution_bound(gflops, model, 16)
    assert result["convolutions_alone"]["ms_per_step"] == pytest.approx(ms)
    top = result["ceiling"]["bfloat16"]
    for name, rate in gflops.items():  # each line: its fraction of the ceiling
        assert f"{name:30s} {rate:6.0f} GFLOP/s  {rate / top:5.2f}" in printed
    # The memory-bound kernels: each against its block's streaming rate.
    from ninlayers.app.streaming import memory_bound

    gbps = result["memory_gbps"]
    assert len(gbps) == 4 * 3 and min(gbps.values()) > 0
    for name, rate in gbps.items():
        block, op = name.split(", ")
        if op != "streaming":
            fraction = rate / gbps[f"{block}, streaming"]
            assert f"{name:30s} {rate:6.1f} GB/s  {fraction:5.2f}" in printed
    memory_ms = memory_bound(gbps, model, 16)
    assert result["kernels_alone"]["ms_per_step"] == pytest.approx(ms + memory_ms)
    assert f"alone: {ms + memory_ms:.1f} ms per step" in printed


def test_kernel_profile_is_refused_on_other_backends(monkeypatch, capsys):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert cli.main(["benchmark", "--kernels"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--backend tensorflow" in err


def test_architecture_without_kernels_is_refused(capsys):
    assert cli.main(["benchmark", "--architecture", "nin_28_narrow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--kernels" in err


def test_kernel_profile_refuses_a_bad_architecture_in_one_line(capsys):
    assert cli.main(["benchmark", "--kernels", "--architecture", "[[96, 3]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "JSON list of block specs" in err


def test_benchmark_images_are_fashion_mnist_else_random(monkeypatch):
    from ninlayers.app import data
    from ninlayers.errors import DatasetError

    x, y, source = benchmark.benchmark_images(8)
    assert source == "Fashion-MNIST" and len(y) == 8
    (train, labels), _ = data.load_fashion_mnist()
    np.testing.assert_allclose(x[..., 0] * 255, train[:8], atol=1e-3)
    assert (y == labels[:8]).all()

    def missing(*args, **kwargs):
        raise DatasetError("no Fashion-MNIST here")

    monkeypatch.setattr(data, "load_fashion_mnist", missing)
    x, y, source = benchmark.benchmark_images(8)
    assert source == "random images" and x.shape == (8, 28, 28, 1)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (8,) and set(y) <= set(range(10))


def test_plain_peers_run_each_command_in_their_own_process(monkeypatch, tmp_path):
    # A stand-in for the plain framework's worker: it checks the data and
    # the backend it was given and answers one line per command, as
    # `ninlayers.app._keras_peer.serve` does.
    log = tmp_path / "commands.txt"
    script = (
        "import os, sys, numpy as np\n"
        "data = np.load(sys.argv[1])\n"
        "assert data['x'].shape == (8, 28, 28, 1) and sys.argv[2] == '4'\n"
        "assert os.environ['KERAS_BACKEND'] == 'jax'\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        f"    open({str(log)!r}, 'a').write(line)\n"
        "    print('done', flush=True)\n"
    )
    monkeypatch.setattr(
        benchmark, "PLAIN_PEERS", {"plain_jax": ("unused", "jax", "numpy")}
    )
    monkeypatch.setattr(benchmark, "_Peer", _ScriptPeer(script))
    x = np.zeros((8, 28, 28, 1), "float32")
    peers = benchmark._plain_peers(x, np.zeros(8, "int64"), 4)
    assert list(peers) == ["plain_jax"]
    peer = peers["plain_jax"]
    try:
        assert peer.ask("fit") == "done" and peer.ask("predict") == "done"
    finally:
        peer.close()
    assert log.read_text() == "fit\npredict\n"
    assert peer._process.returncode == 0


def _ScriptPeer(script: str):
    """`benchmark._Peer`, running `script` with `python -c` instead of a module."""
    real = benchmark._Peer

    def make(args, *rest, **kwargs):
        assert args[0] == "-m"
        return real(["-c", script], *rest, **kwargs)

    return make


def test_versus_plain_pairs_each_backend_with_its_own_framework(monkeypatch):
    train = {"ninlayers": 400.0, "ninlayers_torch": 300.0, "plain_torch": 200.0}
    predict = {"ninlayers": 900.0, "ninlayers_torch": 800.0, "plain_torch": 1600.0}
    ratios = benchmark._versus_plain(train, predict)
    assert ratios == {
        "plain_torch": {"ninlayers": "ninlayers_torch", "train": 1.5, "predict": 0.5}
    }


@pytest.mark.slow
def test_keras_backend_peers_train_and_predict_in_their_own_process(capfd):
    import keras

    from ninlayers.app.benchmark import _backend_peers

    x = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype("float32")
    peers = _backend_peers(x, np.arange(16) % 10, 8)
    try:
        # The test extras install every backend: each other one is a peer.
        active = keras.backend.backend()
        assert set(peers) == {
            f"ninlayers_{b}" for b in ("tensorflow", "jax", "torch") if b != active
        }
        for peer in peers.values():
            assert peer.ask("fit") == "done" and peer.ask("predict") == "done"
    finally:
        for peer in peers.values():
            peer.close()
    for peer in peers.values():
        assert peer._process.returncode == 0
    # The children's start-up lines (TensorFlow's, JAX's) stay out of sight.
    assert "oneDNN" not in capfd.readouterr().err
