"""Plain JAX's NiN under `jax.jit`, float32: a benchmark peer.

The same network as `ninlayers.NiN()` (see `ninlayers.app._torch_peer`),
written with `jax.lax` alone as JAX's documentation would: every convolution
a `conv_general_dilated`, max pooling a `reduce_window`, batch norm's
statistics over the batch, softmax cross-entropy, Adam 1e-3, the whole
training step one `jax.jit` function with its buffers donated. float32, as
ninlayers picks for JAX on a CPU (XLA's CPU kernels gained nothing from
bfloat16 here: docs/performance.md).

Run as a child process by `ninlayers.app.benchmark`:

    python -m ninlayers.app._jax_peer DATA.npz BATCH_SIZE

It answers `fit` (one epoch) and `predict` (every image, batches of 32) as
the other peers do (`ninlayers.app._keras_peer.serve`).
"""

from __future__ import annotations

import sys

import numpy as np

from ninlayers.app._keras_peer import serve

#: (input channels, filters, kernel size, batch norm and ReLU), per
#: convolution; "pool" between stages.
LAYOUT = [
    *[(1, 96, 3, True), (96, 96, 1, True), (96, 96, 1, True), "pool"],
    *[(96, 256, 3, True), (256, 256, 1, True), (256, 256, 1, True), "pool"],
    *[(256, 384, 3, True), (384, 384, 1, True), (384, 384, 1, True), "pool"],
    *[(384, 10, 3, True), (10, 10, 1, True), (10, 10, 1, False)],
]


def _init(seed: int = 0) -> tuple[list, list]:
    """Glorot-uniform kernels; batch norm's (gamma, beta) or a bias; the
    moving (mean, variance) of every normalised convolution."""
    rng = np.random.default_rng(seed)
    params, state = [], []
    for unit in (u for u in LAYOUT if u != "pool"):
        c_in, filters, kernel, normed = unit
        limit = np.sqrt(6.0 / (kernel * kernel * (c_in + filters)))
        w = rng.uniform(-limit, limit, (kernel, kernel, c_in, filters))
        zeros = np.zeros(filters, "float32")
        params.append(
            (w.astype("float32"), np.ones(filters, "float32"), zeros)
            if normed
            else (w.astype("float32"), zeros)
        )
        state.append((zeros, np.ones(filters, "float32")) if normed else ())
    return params, state


def _forward(params, state, x, training: bool):
    import jax
    import jax.numpy as jnp

    h, units, new_state = x, iter(zip(params, state, strict=True)), []
    for item in LAYOUT:
        if item == "pool":
            h = jax.lax.reduce_window(
                h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID"
            )
            continue
        p, s = next(units)
        h = jax.lax.conv_general_dilated(
            h, p[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        if not item[3]:
            h, _ = h + p[1], new_state.append(())
            continue
        if training:
            mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
            new_state.append((0.9 * s[0] + 0.1 * mean, 0.9 * s[1] + 0.1 * var))
        else:
            (mean, var), _ = s, new_state.append(s)
        h = jax.nn.relu((h - mean) * jax.lax.rsqrt(var + 1e-3) * p[1] + p[2])
    return h.mean((1, 2)), new_state


def _train_step():
    import jax
    import jax.numpy as jnp

    def loss_fn(params, state, x, y):
        logits, new_state = _forward(params, state, x, True)
        log_p = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(log_p, y[:, None], 1).mean(), new_state

    def step(params, state, opt, x, y):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, state, x, y
        )
        t, m, v = opt
        t = t + 1
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        rate = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree.map(
            lambda p, a, b: p - rate * a / (jnp.sqrt(b) + 1e-7), params, m, v
        )
        return params, state, (t, m, v), loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def main(argv: list[str]) -> None:
    import jax
    import jax.numpy as jnp

    data = np.load(argv[0])
    batch_size = int(argv[1])
    x, y = data["x"], data["y"].astype("int32")
    params, state = _init()
    # Adam's step count and two moments (distinct buffers: all are donated).
    opt = (
        jnp.zeros((), jnp.float32),
        jax.tree.map(jnp.zeros_like, params),
        jax.tree.map(jnp.zeros_like, params),
    )
    step = _train_step()
    predict_step = jax.jit(lambda p, s, b: jax.nn.softmax(_forward(p, s, b, False)[0]))
    box = {"params": params, "state": state, "opt": opt}

    def fit() -> None:
        for i in range(0, len(x) - batch_size + 1, batch_size):
            box["params"], box["state"], box["opt"], loss = step(
                box["params"],
                box["state"],
                box["opt"],
                x[i : i + batch_size],
                y[i : i + batch_size],
            )
        loss.block_until_ready()

    def predict() -> None:
        for i in range(0, len(x), 32):
            np.asarray(predict_step(box["params"], box["state"], x[i : i + 32]))

    serve(fit, predict)


if __name__ == "__main__":
    main(sys.argv[1:])
