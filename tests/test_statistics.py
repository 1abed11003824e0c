"""Every logged statistic against its definition, computed here in NumPy; and which steps are logged.

The definitions are computed in float64 from what the log itself holds with `record="full"` and
`snapshots=True`: the whole gradients (stored in the model's dtype, exactly as applied) and the
weights before each step. The capture reduces the gradients on the device in the model's
dtype (`kerasbp/logger/capture.py`, `step_reductions`) and the host finishes the statistics in
that dtype (`kerasbp/logger/hooks.py`, `finish_statistics`), so the tolerances below come from
rounding in that dtype, with `eps = np.finfo(dtype).eps` (1.19e-7 in float32) and `n` the number
of entries of the variable:

- `min`, `max`, `max_abs`, `nonfinite`: exact. They pick or count entries without arithmetic.
- `norm`, `weight_norm`: `sqrt` of a sum of `n` squares: relative error at most about
  `(n + 2) * eps / 2` (each square and each addition rounds once, the root halves it); the test
  allows `(n + 2) * eps`, e.g. 1.9e-6 for a 14-entry kernel in float32.
- `mean`: the sum's rounding error is relative to `sum(|g|)`, not to the sum, so an absolute
  term `(n + 1) * eps * mean(|g|)` is needed (a mean near zero has no relative accuracy).
- `std`: one pass, `sqrt(E[g^2] - E[g]^2)`: the variance is off by up to about
  `dv = (n + 3) * eps * E[g^2]`, so the standard deviation by `min(sqrt(dv), dv / std)`.
- `update_ratio`: `|w_after - w_before| / |w_before|`, where the difference is rounded once per
  entry on the device: `(2 n + 6) * eps` relative.
"""

import numpy as np
import pytest

from kerasbp import compile_model, dense_model, linear_model
from kerasbp.logger import STATS, GradientLogger


def regression_data(n, n_in, n_out, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    y = X @ rng.normal(size=(n_in, n_out)) + 0.3 + 0.1 * rng.normal(size=(n, n_out))
    return X.astype(dtype), y.astype(dtype)


def _flat(a):
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)  # (n_logged, n_entries)


def _norm(a):
    return np.sqrt(np.sum(_flat(a) ** 2, axis=1))


#: statistic -> its definition from (gradients g, weights before w0, weights after w1), each
#: float64 `(n_logged, n_entries)`, giving `(n_logged,)`.
DEFINITIONS = {
    "norm": lambda g, w0, w1: np.sqrt(np.sum(g**2, axis=1)),
    "mean": lambda g, w0, w1: np.mean(g, axis=1),
    "std": lambda g, w0, w1: np.std(g, axis=1),
    "min": lambda g, w0, w1: np.min(g, axis=1),
    "max": lambda g, w0, w1: np.max(g, axis=1),
    "max_abs": lambda g, w0, w1: np.max(np.abs(g), axis=1),
    "nonfinite": lambda g, w0, w1: np.sum(~np.isfinite(g), axis=1).astype(np.float64),
    "weight_norm": lambda g, w0, w1: np.sqrt(np.sum(w0**2, axis=1)),
    "update_ratio": lambda g, w0, w1: np.sqrt(np.sum((w1 - w0) ** 2, axis=1)) / np.sqrt(np.sum(w0**2, axis=1)),
    # the norm of what the update rule received: on this plain path (no scaling, clipping or
    # accumulation) the loss gradient itself (tests/test_optimizer_paths.py checks the others)
    "applied_norm": lambda g, w0, w1: np.sqrt(np.sum(g**2, axis=1)),
}


def tolerance(stat, g, w0, expected, eps):
    """The allowed absolute error of each row of `stat` (see the module docstring)."""
    n = g.shape[1]
    if stat in ("min", "max", "max_abs", "nonfinite"):
        return np.zeros(len(g))
    if stat in ("norm", "applied_norm"):
        return (n + 2) * eps * np.abs(expected)
    if stat == "weight_norm":
        return (w0.shape[1] + 2) * eps * np.abs(expected)
    if stat == "update_ratio":
        return (2 * w0.shape[1] + 6) * eps * np.abs(expected)
    if stat == "mean":
        return (n + 1) * eps * np.mean(np.abs(g), axis=1)
    if stat == "std":
        dv = (n + 3) * eps * np.mean(g**2, axis=1)
        with np.errstate(divide="ignore"):
            return np.minimum(np.sqrt(dv), dv / expected)
    raise AssertionError(f"no tolerance for {stat!r}")


def test_every_statistic_has_a_definition_here():
    # A statistic added to STATS must be added to DEFINITIONS (and `tolerance`) above.
    assert set(STATS) == set(DEFINITIONS), f"add the NumPy definition of {sorted(set(STATS) - set(DEFINITIONS))} to this file"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_statistic_equals_its_definition(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    eps = np.finfo(dtype).eps
    # 23 samples in batches of 6: three full batches and one of 5, over 2 epochs = 8 steps.
    # Adam, so that the update is not a multiple of the gradient; a relu layer, so that some
    # gradient entries are exactly zero.
    X, y = regression_data(23, 3, 2, dtype=dtype)
    model = compile_model(dense_model([3, 5, 2], ["relu", "linear"], seed=4), "adam", learning_rate=0.05)
    model.set_weights([w + 0.1 for w in model.get_weights()])  # nonzero biases: finite update ratios
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == list(range(8))
    stats = logger.stats_array()  # (8, 4, len(STATS))
    for j, (grads, before, final) in enumerate(zip(logger.gradients(), logger.weights(), model.get_weights(), strict=True)):
        assert grads.dtype == before.dtype == dtype
        after = np.concatenate([before[1:], final[None]])  # the weights after each step
        g, w0, w1 = _flat(grads), _flat(before), _flat(after)
        for i, stat in enumerate(STATS):
            expected = DEFINITIONS[stat](g, w0, w1)
            got = stats[:, j, i]
            allowed = tolerance(stat, g, w0, expected, eps)
            assert np.all(np.abs(got - expected) <= allowed), (
                f"{stat} of {logger.names[j]} ({dtype}): got {got}, NumPy definition {expected}, allowed |diff| {allowed}"
            )


def test_nonfinite_counts_and_extremes_of_a_diverging_run():
    # SGD far too fast on inputs in the hundreds: the gradients overflow to inf, then NaN.
    X = np.linspace(0, 300, 30, dtype="float32")[:, None]
    y = 0.05 * X + 7
    model = compile_model(linear_model(seed=0), "sgd", learning_rate=0.01)
    logger = GradientLogger(record="full")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        model.fit(X, y, epochs=2, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    counts = logger.stat("nonfinite")  # (n_logged, 2)
    assert counts.max() > 0 and counts.min() == 0  # both kinds of step occur
    for j, grads in enumerate(logger.gradients()):
        g = _flat(grads)
        np.testing.assert_array_equal(counts[:, j], np.sum(~np.isfinite(g), axis=1))
        finite = np.all(np.isfinite(g), axis=1)
        for stat in ("min", "max", "max_abs"):
            np.testing.assert_array_equal(logger.stat(stat)[finite, j], DEFINITIONS[stat](g[finite], None, None))


# ---------------------------------------------------------------- which steps are logged


def _linear_gradients(w, b, X, y):
    """MSE gradients of `Dense(1)` at kernel `w` `(k, 1)` and bias `b` `(1,)`, in float64."""
    residual = X @ w + b - y  # (n, 1)
    d = 2 * residual / len(X)  # dL/dyhat
    return X.T @ d, d.sum(axis=0)


@pytest.mark.parametrize("steps_per_execution", [1, 3, 4])
def test_steps_per_execution_by_every_n_steps_logs_exactly_the_right_steps(steps_per_execution):
    # 14 samples in batches of 4: 4 steps per epoch (the last of 2 samples); one model per
    # steps_per_execution, trained on by three loggers in turn, so each starts mid-count.
    X, y = regression_data(14, 2, 1, seed=1)
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    model = compile_model(linear_model(2, seed=0), "sgd", learning_rate=0.05, steps_per_execution=steps_per_execution)
    start = 0
    for every_n_steps in (1, 2, 3):
        logger = GradientLogger(every_n_steps=every_n_steps, record="full", snapshots=True)
        model.fit(X, y, epochs=3, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)  # 12 steps
        expected = [s for s in range(start, start + 12) if s % every_n_steps == 0]
        assert logger.steps.tolist() == expected, (steps_per_execution, every_n_steps)
        assert logger.epochs.tolist() == [(s - start) // 4 for s in expected]
        (kernel_grads, bias_grads), (kernels, biases) = logger.gradients(), logger.weights()
        assert len(kernel_grads) == len(bias_grads) == len(kernels) == len(expected)
        # each row is the gradient of its own step: that batch, at the weights before it
        for r, step in enumerate(expected):
            batch = slice(4 * ((step - start) % 4), 4 * ((step - start) % 4) + 4)
            gw, gb = _linear_gradients(kernels[r].astype(np.float64), biases[r].astype(np.float64), X64[batch], y64[batch])
            np.testing.assert_allclose(kernel_grads[r], gw, rtol=1e-5, atol=1e-6)  # float32 forward and backward
            np.testing.assert_allclose(bias_grads[r], gb, rtol=1e-5, atol=1e-6)
        start += 12
    assert int(model.optimizer.iterations.numpy()) == 36
