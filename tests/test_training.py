"""kerasbp.train: fit(shuffle=False)'s results in few compiled calls, traced once per model."""

import keras
import numpy as np
import pytest

from kerasbp import GradientLogger, compile_model, train, xor_data, xor_model
from kerasbp import training


def _count_traces(model):
    """Wrap `model.train_step` so that each trace of a loop that calls it is counted."""
    traces = []
    original = model.train_step

    def counting(data):
        traces.append(1)
        return original(data)

    model.train_step = counting
    return traces


def test_later_calls_trace_nothing_new():
    # After one call, a new logger, another epoch count, a learning rate set by assignment and
    # new data of the same shape reuse the traced loop.
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    traces = _count_traces(model)
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
    real = training._make_loop

    def spy(model, batch_size, n_full, rest, jit, max_epochs):
        seen.append(jit)
        return real(model, batch_size, n_full, rest, jit, max_epochs)

    monkeypatch.setattr(training, "_make_loop", spy)
    monkeypatch.setattr(training, "AUTO_XLA_MIN_STEPS", 100)
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd")
    train(model, X, y, epochs=99, batch_size=4)
    train(model, X, y, epochs=100, batch_size=4)
    assert seen == [False, True]
    with pytest.raises(TypeError, match="jit_compile"):
        train(model, X, y, jit_compile="yes")
