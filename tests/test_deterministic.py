"""Deterministic runs compared tightly with an independent computation, not within windows.

- `kerasbp.train` in float64 against the NumPy twin's `fit` (consecutive batches, the last one
  partial): the same arithmetic in another order, 1e-12 relative.
- `kerasbp.train` with integer and boolean arrays against the same run with floats: they are
  converted to the same float32 arrays first, so the runs are bit-identical.
- `explain_backprop`: every term's arrays, both Keras's and the twin's, against a forward and
  backward pass written out here in NumPy float64 (1e-12 relative in float64; in float32, 5e-6
  of each array's largest entry: a few float32 roundings after sums of a few products, measured
  at up to 7e-7).
"""

import numpy as np
import pytest

import kerasbp as kb
from kerasbp.backprop import Term, explain_backprop
from kerasbp.reference import NumpyMLP
from kerasbp.reference import optimizer_from_keras


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_float64_equals_the_twins_fit_with_a_partial_last_batch(float64, optimizer):
    # 11 samples in batches of 4: slices [0:4], [4:8] and the partial [8:11], every epoch.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(11, 2))
    y = np.tanh(X @ [[1.0], [-0.5]]) + 0.1 * rng.normal(size=(11, 1))
    model = kb.compile_model(kb.dense_model([2, 3, 1], ["tanh", "linear"], seed=1), optimizer, learning_rate=0.05)
    twin = NumpyMLP.from_keras(model)
    assert twin.dtype == "float64"
    history = kb.train(model, X, y, epochs=6, batch_size=4, jit_compile=False)
    twin_losses = twin.fit(X, y, optimizer_from_keras(model.optimizer), epochs=6, batch_size=4, loss="mse")
    np.testing.assert_allclose(history.history["loss"], twin_losses, rtol=1e-12)
    for keras_weight, twin_weight in zip(model.get_weights(), twin.params, strict=True):
        np.testing.assert_allclose(keras_weight, twin_weight, rtol=1e-12, atol=1e-15)
    assert int(model.optimizer.iterations.numpy()) == 6 * 3


def test_train_with_int_and_bool_arrays_equals_the_run_with_floats():
    X_int = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 1]])  # int64
    y_bool = np.array([False, True, True, False, True])
    runs = []
    for X, y in ((X_int, y_bool), (X_int.astype("float32"), y_bool.astype("float32")[:, None])):
        model = kb.compile_model(kb.xor_model(seed=0), "adam", learning_rate=0.1, loss="binary_crossentropy")
        logger = kb.GradientLogger(record="full")
        history = kb.train(model, X, y, epochs=5, batch_size=2, callbacks=[logger])  # batches of 2, 2 and 1
        runs.append((history.history["loss"], model.get_weights(), logger.gradients(), logger.losses))
    (losses_a, weights_a, grads_a, logged_a), (losses_b, weights_b, grads_b, logged_b) = runs
    assert losses_a == losses_b
    np.testing.assert_array_equal(logged_a, logged_b)
    for a, b in zip(weights_a + grads_a, weights_b + grads_b, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- explain_backprop


DERIVATIVES = {  # f'(z) from z
    "linear": lambda z: np.ones_like(z),
    "relu": lambda z: (z > 0).astype(z.dtype),
    "tanh": lambda z: 1 - np.tanh(z) ** 2,
    "sigmoid": lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z))),
}
FUNCTIONS = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


def backprop_by_hand(weights, activations, X, y, loss):
    """One forward and backward pass in float64: `{(layer index, quantity): array}` and the loss."""
    params = [np.asarray(w, np.float64) for w in weights]
    kernels, biases = params[0::2], params[1::2]
    a, inputs, zs = np.asarray(X, np.float64), [], []
    for W, b, f in zip(kernels, biases, activations, strict=True):
        inputs.append(a)
        zs.append(a @ W + b)  # (n, units)
        a = FUNCTIONS[f](zs[-1])
    y = np.asarray(y, np.float64).reshape(a.shape)
    n, d = a.shape
    if loss == "mse":
        value = np.mean((a - y) ** 2)
        dL_da = 2 * (a - y) / (n * d)
        delta = dL_da * DERIVATIVES[activations[-1]](zs[-1])
    else:  # binary cross-entropy of a sigmoid output, by its logits
        value = np.mean(np.maximum(zs[-1], 0) - zs[-1] * y + np.log1p(np.exp(-np.abs(zs[-1]))))
        p = np.clip(a, 1e-7, 1 - 1e-7)
        dL_da = ((1 - y) / (1 - p) - y / p) / (n * d)  # what the twin shows on the probability side
        delta = (a - y) / (n * d)
    terms = {}
    for i in range(len(kernels) - 1, -1, -1):
        terms[i, "dL/da"] = dL_da
        terms[i, "delta = dL/dz"] = delta
        terms[i, "dL/dW"] = inputs[i].T @ delta  # (units_in, units)
        terms[i, "dL/db"] = delta.sum(axis=0)  # (units,)
        terms[i, "dL/da_prev"] = delta @ kernels[i].T  # (n, units_in)
        if i > 0:
            dL_da = terms[i, "dL/da_prev"]
            delta = dL_da * DERIVATIVES[activations[i - 1]](zs[i - 1])
    return terms, value


def assert_close_to_scale(actual, expected, rtol, what):
    """`|actual - expected| <= rtol * max|expected|`, elementwise over the array."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)), err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "activations, loss",
    [(["relu", "tanh", "linear"], "mse"), (["tanh", "sigmoid", "sigmoid"], "binary_crossentropy")],
    ids=["relu-tanh-linear-mse", "tanh-sigmoid-sigmoid-bce"],
)
def test_explain_backprop_terms_equal_a_backward_pass_written_out_in_numpy(dtype, activations, loss, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    rtol = 1e-12 if dtype == "float64" else 5e-6
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 3))
    y = rng.uniform(0.1, 0.9, size=(6, 2)) if loss == "binary_crossentropy" else rng.normal(size=(6, 2))
    model = kb.compile_model(kb.dense_model([3, 5, 4, 2], activations, seed=3), "sgd", loss=loss)
    model.set_weights([w + 0.05 for w in model.get_weights()])  # nonzero biases
    X_in, y_in = X.astype(dtype), y.astype(dtype)  # what both sides compute from
    e = explain_backprop(model, X_in, y_in)
    expected, value = backprop_by_hand(model.get_weights(), activations, X_in, y_in, loss)
    assert e.loss_keras == pytest.approx(value, rel=rtol) and e.loss_numpy == pytest.approx(value, rel=rtol)
    names = [layer.name for layer in model.layers]
    for t in e.terms:
        i = names.index(t.layer)
        want = expected[i, t.name]
        assert_close_to_scale(t.numpy, want, rtol, f"twin {t.layer} {t.name}")
        if t.keras is None:  # Keras differentiates the logits: no dL/da for a sigmoid output under BCE
            assert (i, t.name, loss) == (len(names) - 1, "dL/da", "binary_crossentropy")
            continue
        assert_close_to_scale(t.keras, want, rtol, f"Keras {t.layer} {t.name}")
        # and the differences it reports are those of the two arrays
        diff = np.max(np.abs(t.keras.astype(np.float64) - t.numpy))
        assert t.max_abs_diff == diff
        assert t.max_rel_diff == (diff / np.max(np.abs(t.keras)) if np.max(np.abs(t.keras)) > 0 else diff)
    assert len(e.terms) == 3 * 5


def test_term_reports_the_difference_of_its_two_arrays():
    t = Term("dense", "dL/dW", np.array([[1.0, -2.0], [4.0, 0.5]]), np.array([[1.5, -2.0], [4.0, 0.25]]))
    assert t.max_abs_diff == 0.5 and t.max_rel_diff == 0.5 / 4.0
    assert t.shape == (2, 2)
    zero = Term("dense", "dL/db", np.zeros(3), np.full(3, 1e-3))
    assert zero.max_abs_diff == 1e-3 and zero.max_rel_diff == np.inf  # a difference where Keras's side is all zero
    absent = Term("out", "dL/da", None, np.ones(2))
    assert np.isnan(absent.max_abs_diff) and np.isnan(absent.max_rel_diff)
