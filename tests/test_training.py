"""kerasbp.train: fit(shuffle=False)'s results in few compiled calls, traced once per model."""

import keras
import numpy as np
import pytest

from kerasbp import GradientLogger, compile_model, train, xor_data, xor_model
from kerasbp import training, training_tf
import kerasbp as kb


def test_later_calls_trace_nothing_new(count_traces):
    # After one call, a new logger, another epoch count, a learning rate set by assignment and
    # new data of the same shape reuse the traced loop.
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    traces = count_traces(model)
    train(model, X, y, epochs=1000, batch_size=4, callbacks=[GradientLogger()])
    assert len(traces) >= 1
    n_traced = len(traces)
    logger = GradientLogger()
    train(model, X, y, epochs=1001, batch_size=4, callbacks=[logger])
    model.optimizer.learning_rate = 0.1
    train(model, X, y, epochs=7, batch_size=4, callbacks=[GradientLogger()])
    train(model, 1 - X, 1 - y, epochs=300, batch_size=4, callbacks=[GradientLogger()])
    assert len(traces) == n_traced
    np.testing.assert_array_equal(logger.steps, np.arange(1000, 2001))
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1)
    assert int(model.optimizer.iterations.numpy()) == 1000 + 1001 + 7 + 300


def test_calls_are_short_and_grow_to_the_target_time(monkeypatch):
    # The loop returns after about SECONDS_PER_CALL: with a tiny target every call runs a few
    # epochs, and the run still trains every epoch once.
    monkeypatch.setattr(training, "SECONDS_PER_CALL", 1e-4)
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    calls = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            calls.append(batch)

    history = train(model, X, y, epochs=200, batch_size=4, callbacks=[GradientLogger(), keras.callbacks.History()], epochs_per_call=None)
    assert len(history.history["loss"]) == 200
    model2 = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    train(model2, X, y, epochs=200, batch_size=4, callbacks=[Count()], epochs_per_call=50)
    assert len(calls) > 200 / 50  # more calls than the bound alone would make
    np.testing.assert_allclose(model2.get_weights()[0], model.get_weights()[0], rtol=1e-6)


def test_jit_compile_auto_uses_xla_only_for_long_runs(monkeypatch):
    seen = []
    real = training_tf._make_loop

    def spy(model, batch_size, n_full, rest, jit, *args):
        seen.append(jit)
        return real(model, batch_size, n_full, rest, jit, *args)

    monkeypatch.setattr(training_tf, "_make_loop", spy)
    monkeypatch.setattr(training, "AUTO_XLA_MIN_STEPS", 100)
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd")
    train(model, X, y, epochs=99, batch_size=4)
    train(model, X, y, epochs=100, batch_size=4)
    assert seen == [False, True]
    with pytest.raises(TypeError, match="jit_compile"):
        train(model, X, y, jit_compile="yes")


@pytest.mark.parametrize("on_nonfinite", ["stop", "raise"])
def test_a_stopping_logger_stops_the_loop_at_the_first_nonfinite_step(on_nonfinite):
    # Linear regression with a learning rate far too large: the weights grow by a factor of
    # about 1e4 a step and overflow float32 within a few dozen steps.
    X = np.linspace(0, 300, 30, dtype="float32")[:, None]
    y = 0.05 * X + 7
    model = compile_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), "sgd", learning_rate=0.01)
    logger = GradientLogger(on_nonfinite=on_nonfinite)
    if on_nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="non-finite (loss|gradient) at step"):
            train(model, X, y, epochs=50, batch_size=1, callbacks=[logger])
    else:
        with pytest.warns(RuntimeWarning, match="training stopped"):
            history = train(model, X, y, epochs=50, batch_size=1, callbacks=[logger])
        assert len(history.history["loss"]) == logger.epochs[-1] + 1  # the epoch it stopped in is the last
    nonfinite = logger.stat("nonfinite").sum(axis=1) > 0
    bad = ~np.isfinite(logger.losses) | nonfinite
    first = int(np.flatnonzero(bad)[0])
    assert first == len(logger.steps) - 1  # the log ends at the first non-finite step
    assert logger.first_nonfinite["step"] == logger.steps[first]
    assert logger.health().figures["first_nonfinite_step"] == logger.steps[first]
    assert int(model.optimizer.iterations.numpy()) == logger.steps[-1] + 1


# ---------------------------------------------------------------- weights, validation, shuffling


def _weighted_setup():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2)).astype("float32")
    y = (X[:, :1] > 0).astype("float32")
    return X, y, rng.uniform(0.5, 2, size=30).astype("float32")


@pytest.mark.parametrize("kind", ["sample_weight", "class_weight", "validation_data"])
def test_train_equals_fit_with_weights_and_validation(kind):
    X, y, sw = _weighted_setup()
    kwargs = {"sample_weight": {"sample_weight": sw}, "class_weight": {"class_weight": {0: 2.0, 1: 0.5}}, "validation_data": {"validation_data": (X[:7] + 0.1, y[:7])}}[kind]
    a = kb.compile_model(kb.xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    b = kb.compile_model(kb.xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    h1 = kb.train(a, X, y, epochs=4, batch_size=8, **kwargs)
    h2 = b.fit(X, y, epochs=4, batch_size=8, shuffle=False, verbose=0, **kwargs)
    assert set(h1.history) == set(h2.history)
    for k in h2.history:
        np.testing.assert_array_equal(h1.history[k], h2.history[k])
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)


def test_train_shuffle_is_fit_on_the_seeded_permutation():
    X, y, _ = _weighted_setup()
    a = kb.compile_model(kb.xor_model(seed=0), "sgd", loss="binary_crossentropy")
    b = kb.compile_model(kb.xor_model(seed=0), "sgd", loss="binary_crossentropy")
    h1 = kb.train(a, X, y, epochs=3, batch_size=8, shuffle=3)
    p = np.random.default_rng(3).permutation(30)
    h2 = b.fit(X[p], y[p], epochs=3, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(h1.history["loss"], h2.history["loss"])
    with pytest.raises(TypeError, match=r"`shuffle` must be a bool or an int seed"):
        kb.train(a, X, y, shuffle="yes")
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(30,\)"):
        kb.train(a, X, y, sample_weight=np.ones(3))
