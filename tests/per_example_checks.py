"""Brute force for `GradientLogger(per_example=True)`, shared by tests/test_per_example.py (TensorFlow)
and tests/backends/test_per_example_torch.py: every example's gradient from the NumPy twin, the
statistics by their textbook definitions, and the tolerances (stated and justified in
tests/test_per_example.py's docstring)."""

import numpy as np

from kerasbp import GradientLogger, NumpyMLP, compile_model, dense_model
from kerasbp.logger.log import NOISE

EPS32 = float(np.finfo("float32").eps)


def float32_rtol(name, value):
    """The relative tolerance of a float32 model's `name` (see the module docstring)."""
    if name == "norms":
        return 10 * EPS32
    if name.endswith("_test"):
        return 100 * EPS32 * (1 + 1 / value**2)
    if name == "b_simple":
        return 100 * EPS32 * (1 + abs(value))
    raise AssertionError(name)


def gsnr_rtol(eps, gsnr_max):
    """The mean GSNR's relative tolerance: each parameter's variance `E[g_i^2] - g^2` loses
    `log10(1 + GSNR)` digits to cancellation (see the module docstring)."""
    return 100 * eps * (1 + gsnr_max)


# ---------------------------------------------------------------- brute force and definitions


def per_example_gradients(twin, weights, X, y, loss, sample_weight=None, masks=None):
    """float64 `(B, n_parameters)`: row i is the gradient of example i's own loss, flattened over
    the variables in `model.trainable_weights` order."""
    twin = twin.astype("float64")
    twin.set_params([np.asarray(w, np.float64) for w in weights])
    rows = []
    for i in range(len(X)):
        kwargs = {}
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight[i : i + 1]
        if masks is not None:
            kwargs["dropout_masks"] = [m[i : i + 1] for m in masks]
        _, grads = twin.gradients(X[i : i + 1].astype(np.float64), y[i : i + 1], loss, **kwargs)
        rows.append(np.concatenate([np.ravel(g) for g in grads]))
    return np.array(rows)


def definitions(G):
    """The statistics of one step from its per-example gradients `G` `(B, P)`, by definition."""
    B = len(G)
    g = G.mean(axis=0)  # the batch gradient
    gg = g @ g
    sq = np.sum(G * G, axis=1)  # |g_i|^2
    p = G @ g  # g_i . g
    var = np.mean((G - g) ** 2, axis=0)  # per parameter, centered
    # "not zero": parameters whose per-example gradients are all equal (dead relu units) give
    # var = 0 up to the rounding of the mean here
    has = var > 1e-20 * np.mean(G * G, axis=0)
    S = (np.mean(sq) - gg) / (1 - 1 / B)
    G2 = (B * gg - np.mean(sq)) / (B - 1)
    return {
        "norms": np.sqrt(sq),
        "norm_test": np.sqrt(np.sum((G - g) ** 2) / ((B - 1) * B * gg)),
        "inner_product_test": np.sqrt(np.sum((p - gg) ** 2) / ((B - 1) * B * gg**2)),
        "orthogonality_test": np.sqrt(np.sum((G - np.outer(p / gg, g)) ** 2) / ((B - 1) * B * gg)),
        "gsnr": np.mean(g[has] ** 2 / var[has]),
        "gsnr_max": np.max(g[has] ** 2 / var[has]),
        "b_simple": S / G2,
        "S": S,
        "G2": G2,
    }


def batches(n, batch_size):
    return [slice(k, min(k + batch_size, n)) for k in range(0, n, batch_size)]


def check_against_brute_force(logger, model, X, y, loss, batch_size, dtype, sample_weight=None, masks=None, steps=None):
    """Every logged step's norms and statistics against the twin's per-example gradients; the
    mean of those equals the logged batch gradient."""
    twin = NumpyMLP.from_keras(model)
    weights = logger.weights()
    norms = logger.per_example_norms()
    noise = logger.noise
    grads = logger.gradients() if logger.record == "full" else None

    def rtol(name, value):
        if name == "gsnr":
            return max(1e-10, gsnr_rtol(np.finfo(dtype).eps, expected["gsnr_max"]))
        return 1e-10 if dtype == "float64" else float32_rtol(name, value)

    slices = batches(len(X), batch_size)
    steps = logger.steps if steps is None else steps
    assert len(norms) == len(steps)
    for r, step in enumerate(steps):
        rows = slices[int(step) % len(slices)]
        G = per_example_gradients(
            twin,
            [w[r] for w in weights],
            X[rows],
            y[rows],
            loss,
            None if sample_weight is None else sample_weight[rows],
            None if masks is None else [m[r] for m in masks],
        )
        B = len(G)
        expected = definitions(G)
        got = norms[r]
        assert np.all(np.isnan(got[B:])), "a partial batch is NaN-padded"
        np.testing.assert_allclose(got[:B], expected["norms"], rtol=rtol("norms", None), err_msg=f"per-example norms, step {step}")
        for name in NOISE:
            np.testing.assert_allclose(noise[name][r], expected[name], rtol=rtol(name, expected[name]), err_msg=f"{name}, step {step}")
        if grads is not None:  # the mean of the per-example gradients is the logged batch gradient
            logged = np.concatenate([np.ravel(g[r]) for g in grads]).astype(np.float64)
            tol = 1e-10 if dtype == "float64" else 1e-5  # float32: Keras's own float32 backward pass
            np.testing.assert_allclose(G.mean(axis=0), logged, rtol=tol, atol=tol * np.abs(logged).max(), err_msg=f"batch gradient, step {step}")


def data(n, n_in, loss, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    if loss == "mse":
        y = (X @ rng.normal(size=(n_in, 2)) + 0.3 * rng.normal(size=(n, 2))).astype(dtype)
    elif loss == "binary_crossentropy":
        y = (X[:, :1] + 0.5 * rng.normal(size=(n, 1)) > 0).astype(dtype)
    else:  # categorical_crossentropy
        y = np.eye(3, dtype=dtype)[rng.integers(0, 3, n)]
    return X, y


#: loss -> (output units, output activation)
OUTPUTS = {"mse": (2, "linear"), "binary_crossentropy": (1, "sigmoid"), "categorical_crossentropy": (3, "softmax")}


def mlp(loss, seed=3):
    """relu, tanh and sigmoid layers. With batches of 6, `a_i^T G d_i` is computed directly in
    the 4x16 and 12x5 layers and from the examples' Gram matrices in the 16x12 layer
    (`kerasbp.logger.per_example_ops.a_g_d`)."""
    units, out = OUTPUTS[loss]
    return dense_model([4, 16, 12, 5, units], ["relu", "tanh", "sigmoid", out], seed=seed)


def check_mlp(loss, dtype, tolerance_dtype):
    """Fit `mlp(loss)` (a dead relu unit: its parameters' per-example variance is zero, left out
    of the GSNR) with `GradientLogger(per_example=True)` on 23 samples in batches of 6 (three of 6
    and a partial one of 5) for 2 epochs, 8 steps, and check every step against brute force with
    the tolerances of `tolerance_dtype`. Set the float64 policy first for a float64 model.

    Returns:
        the logger.
    """
    X, y = data(23, 4, loss, dtype=dtype)
    model = compile_model(mlp(loss), "sgd", learning_rate=0.1, loss=loss)
    kernel, bias = model.layers[0].get_weights()
    bias[0] = -50.0
    model.layers[0].set_weights([kernel, bias])
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == list(range(8))
    assert logger.per_example_norms().shape == (8, 6)
    assert sorted(logger.noise) == sorted(NOISE) and all(a.dtype == np.float64 and a.shape == (8,) for a in logger.noise.values())
    check_against_brute_force(logger, model, X, y, loss, 6, tolerance_dtype)
    return logger
