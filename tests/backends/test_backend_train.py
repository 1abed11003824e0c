"""kerasbp.train on the JAX and torch backends: the results of `fit(shuffle=False)`, the logger's
gradients, and (JAX) one trace serving later calls.

Run with `KERAS_BACKEND=jax python -m pytest tests/backends` (or `KERAS_BACKEND=torch`); skipped
under TensorFlow, whose tests are tests/test_training.py.
"""

import keras
import numpy as np
import pytest

import kerasbp as kb
from kerasbp import GradientLogger, compile_model, linear_model, xor_data, xor_model
from kerasbp.reference import NumpyMLP

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")


def _setup(task, optimizer, dtype):
    """A model and its data, with a partial last batch of 4: XOR's 4 samples repeated 3 times in
    batches of 8 (a power of two: see below); 36 regression samples in batches of 8."""
    if task == "xor":
        X, y = (np.tile(a, (3, 1)) for a in xor_data(dtype))
        model, loss, batch = xor_model(seed=1), "binary_crossentropy", 8
    else:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(36, 2)).astype(dtype)
        y = (X @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(36, 1))).astype(dtype)
        model, loss, batch = linear_model(2), "mse", 8
        model.set_weights([np.array([[0.5], [-0.5]], dtype), np.array([0.1], dtype)])
    return compile_model(model, optimizer, learning_rate=0.05, loss=loss), X, y, loss, batch


#: Each task and optimizer once in the default tier, in float64 and float32 in turn (a jitted
#: loop and fit's step compile for seconds on JAX); the rest of the matrix with `-m slow`.
DEFAULT = [("xor", "sgd", "float64"), ("xor", "adam", "float32"), ("linear", "sgd", "float32"), ("linear", "adam", "float64")]
CASES = [
    pytest.param(*case, id="-".join(case), marks=() if case in DEFAULT else pytest.mark.slow)
    for case in ((task, optimizer, dtype) for task in ("xor", "linear") for optimizer in ("sgd", "adam") for dtype in ("float64", "float32"))
]


@pytest.mark.parametrize("task, optimizer, dtype", CASES)
def test_train_equals_fit_and_logs_fits_and_the_twins_gradients(task, optimizer, dtype, request):
    # kb.train against fit(shuffle=False) on a twin model, both with a GradientLogger: the
    # weights, the History and every logged gradient agree to rtol 1e-12 in float64 and 1e-6 in
    # float32 (measured: bit for bit on both backends). The logged gradients also equal the NumPy
    # twin's at the logged weights (snapshots) on the step's batch: float64 XOR 1e-12, else 1e-5,
    # relative to the step's gradient norm (Keras computes parts of a float64 model in float32
    # on JAX and torch, and a batch size that is no power of two puts float32(1/n) into every
    # float64 gradient: see test_backend_logger.py).
    if dtype == "float64":
        request.getfixturevalue("float64")
    rtol = 1e-12 if dtype == "float64" else 1e-6
    twin_rtol = 1e-12 if (BACKEND, task, dtype) == ("jax", "xor", "float64") else 1e-5
    epochs = 6
    model, X, y, loss, batch = _setup(task, optimizer, dtype)
    other, _, _, _, _ = _setup(task, optimizer, dtype)
    twin = NumpyMLP.from_keras(model).astype("float64")
    ours, theirs = GradientLogger(record="full", snapshots=True), GradientLogger(record="full")
    history = kb.train(model, X, y, epochs=epochs, batch_size=batch, callbacks=[ours])
    expected = other.fit(X, y, epochs=epochs, batch_size=batch, shuffle=False, verbose=0, callbacks=[theirs])
    for got, want in zip(model.get_weights(), other.get_weights(), strict=True):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=rtol)
    per_epoch = -(-len(X) // batch)
    assert ours.steps.tolist() == theirs.steps.tolist() == list(range(epochs * per_epoch))
    assert ours.epochs.tolist() == theirs.epochs.tolist()
    np.testing.assert_allclose(ours.losses, theirs.losses, rtol=rtol)
    for got, want in zip(ours.gradients(), theirs.gradients(), strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    weights = ours.weights()
    for k, grads in enumerate(zip(*ours.gradients(), strict=True)):
        start = (k % per_epoch) * batch
        twin.set_params([w[k].astype("float64") for w in weights])
        _, exact = twin.gradients(X[start : start + batch].astype("float64"), y[start : start + batch].astype("float64"), loss)
        scale = np.sqrt(sum(np.sum(e**2) for e in exact))
        for g, e in zip(grads, exact, strict=True):
            assert np.linalg.norm(g - e) <= twin_rtol * scale, (k, g, e)


def test_validation_and_sample_weights_equal_fit():
    X, y = (np.tile(a, (3, 1)) for a in xor_data())  # 12 samples in batches of 5: a partial batch
    sw = np.linspace(0.5, 2, 12, dtype="float32")
    kwargs = {"sample_weight": sw, "validation_data": (X[:7] + 0.1, y[:7])}
    a = compile_model(xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    b = compile_model(xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    h1 = kb.train(a, X, y, epochs=4, batch_size=5, **kwargs)
    h2 = b.fit(X, y, epochs=4, batch_size=5, shuffle=False, verbose=0, **kwargs)
    assert set(h1.history) == set(h2.history) == {"loss", "val_loss"}
    for k in h2.history:
        np.testing.assert_allclose(h1.history[k], h2.history[k], rtol=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6)


@pytest.mark.parametrize("on_nonfinite", ["stop", "raise"])
def test_a_stopping_logger_stops_the_loop_at_the_first_nonfinite_step(on_nonfinite):
    # A learning rate far too large: the weights overflow float32 within a few dozen steps.
    X = np.linspace(0, 300, 30, dtype="float32")[:, None]
    model = compile_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), "sgd", learning_rate=0.01)
    logger = GradientLogger(on_nonfinite=on_nonfinite)
    if on_nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="non-finite (loss|gradient) at step"):
            kb.train(model, X, 0.05 * X + 7, epochs=50, batch_size=1, callbacks=[logger])
    else:
        with pytest.warns(RuntimeWarning, match="training stopped"):
            history = kb.train(model, X, 0.05 * X + 7, epochs=50, batch_size=1, callbacks=[logger])
        assert len(history.history["loss"]) == logger.epochs[-1] + 1  # the epoch it stopped in is the last
    bad = ~np.isfinite(logger.losses) | (logger.stat("nonfinite").sum(axis=1) > 0)
    assert int(np.flatnonzero(bad)[0]) == len(logger.steps) - 1  # the log ends at the first non-finite step
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == logger.steps[-1] + 1


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's jitted loop")
def test_later_calls_trace_nothing_new():
    # After one call, another epoch count, a new logger with the same options, a learning rate
    # set by assignment and new data of the same shape and dtype reuse the jitted loop. A traced
    # step runs its Python once: the wrapper below counts traces, not steps.
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    traces = []
    original = model.train_step

    def counting(state, data):
        traces.append(1)
        return original(state, data)

    object.__setattr__(model, "train_step", counting)
    kb.train(model, X, y, epochs=1000, batch_size=4, callbacks=[GradientLogger()])
    assert len(traces) >= 1
    n_traced = len(traces)
    logger = GradientLogger()
    kb.train(model, X, y, epochs=1001, batch_size=4, callbacks=[logger])
    model.optimizer.learning_rate = 0.1
    kb.train(model, X, y, epochs=7, batch_size=4, callbacks=[GradientLogger()])
    kb.train(model, 1 - X, 1 - y, epochs=300, batch_size=4, callbacks=[GradientLogger()])
    assert len(traces) == n_traced
    np.testing.assert_array_equal(logger.steps, np.arange(1000, 2001))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.1)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1000 + 1001 + 7 + 300
    kb.train(model, X, y, epochs=3, batch_size=3, callbacks=[GradientLogger()])  # other batching: a new loop
    assert len(traces) > n_traced


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_a_keras_distribution_is_refused_by_name():
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd")
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        with pytest.raises(ValueError, match="does not support keras.distribution on JAX: DataParallel"):
            kb.train(model, X, y, epochs=2, batch_size=4)
    finally:
        keras.distribution.set_distribution(None)
    kb.train(model, X, y, epochs=2, batch_size=4)  # without it, it trains
