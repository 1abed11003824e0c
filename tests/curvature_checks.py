"""The checks of `kb.HessianProbe` shared by tests/test_curvature.py (TensorFlow) and
tests/backends/test_backend_curvature.py (JAX, torch): each against a closed form, the twin's
exact Hessian, or training without the probe, with the tolerances the caller states (each test
file's docstring says why)."""

import keras
import numpy as np
import pytest

import kerasbp as kb
from kerasbp.reference import NumpyMLP

X_LIN, Y_LIN = kb.linear_data()  # 100 points, x ~ U[0, 1)


def closed_form(X):
    """The Hessian of linear regression with MSE: (2/n) [X 1]^T [X 1], whatever the weights."""
    A = np.hstack([X, np.ones((len(X), 1))])
    return 2 / len(X) * A.T @ A


def linear(lr=0.1, **compile_kwargs):
    return kb.compile_model(kb.linear_model(seed=0), "sgd", learning_rate=lr, **compile_kwargs)


def check_each_steps_batch(rtol_lambda, rtol_trace):
    """Linear regression, batches of 30 (three full ones and a last one of 10), each probed at the
    weights before its update: `lambda_max` and the exact trace of each batch's closed form."""
    probe = kb.HessianProbe(every_n_steps=1, n_probes="exact")
    model = linear()
    model.fit(X_LIN, Y_LIN, batch_size=30, epochs=2, shuffle=False, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == list(range(8))
    batches = [closed_form(X_LIN[s : s + 30]) for s in (0, 30, 60, 90)] * 2
    np.testing.assert_allclose(probe.lambda_max, [np.linalg.eigvalsh(H)[-1] for H in batches], rtol=rtol_lambda)  # 20 iterations (the default)
    np.testing.assert_allclose(probe.trace, [np.trace(H) for H in batches], rtol=rtol_trace)  # exact: the basis vectors
    np.testing.assert_allclose(probe.stability_threshold, 2 / 0.1, rtol=1e-12)
    assert "train_step" not in model.__dict__  # unwrapped at the end


def check_xor_against_the_twin(order, rtol_lambda, rtol_trace):
    """XOR with a logger's snapshots (the weights before each probed step) beside the probe, in
    either `order`: `lambda_max` and the trace equal `eigvalsh` and the trace of the twin's exact
    Hessian at those weights."""
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=1), "sgd", learning_rate=2.0, loss="binary_crossentropy")
    probe = kb.HessianProbe(every_n_steps=5, n_iterations=100, n_probes="exact")
    logger = kb.GradientLogger(every_n_steps=5, snapshots=True)
    callbacks = [logger, probe] if order == "logger_first" else [probe, logger]
    model.fit(X, y, batch_size=4, epochs=20, verbose=0, callbacks=callbacks)
    assert probe.steps.tolist() == logger.steps.tolist() == [0, 5, 10, 15]
    twin = NumpyMLP.from_keras(model)
    for k, weights in enumerate(zip(*logger.weights(), strict=True)):
        twin.set_params(weights)
        H = twin.hessian(X, y, "binary_crossentropy")
        np.testing.assert_allclose(probe.lambda_max[k], np.linalg.eigvalsh(H)[-1], rtol=rtol_lambda)  # 100 iterations
        np.testing.assert_allclose(probe.trace[k], np.trace(H), rtol=rtol_trace)
    assert "train_step" not in model.__dict__


def check_hutchinson(rtol_same_seed):
    """Hutchinson's trace with 400 probes on linear regression: the same seed gives the same draws
    (the traces agree to `rtol_same_seed`: the products' sums may add in another order), another
    seed others, new probes at each step, and every estimate within 5 standard deviations."""
    H = closed_form(X_LIN)
    runs = {}
    for seed in (0, 0, 1):
        probe = kb.HessianProbe(every_n_steps=1, n_iterations=2, n_probes=400, seed=seed)
        linear().fit(X_LIN, Y_LIN, batch_size=100, epochs=3, verbose=0, callbacks=[probe])
        runs.setdefault(seed, []).append(probe.trace)
    np.testing.assert_allclose(runs[0][0], runs[0][1], rtol=rtol_same_seed, atol=0)
    assert np.min(np.abs(runs[0][0] - runs[1][0])) > 1e-4  # another seed, other draws
    assert len(set(runs[0][0].tolist())) == 3  # new probes at each step
    # z.Hz = tr H + 2 H_01 z_0 z_1: standard deviation 2 |H_01| / sqrt(400) for the mean of 400
    sigma = 2 * abs(H[0, 1]) / np.sqrt(400)
    assert np.all(np.abs(np.concatenate([runs[0][0], runs[1][0]]) - np.trace(H)) < 5 * sigma)


def dropout_bn_model(dropout_seed):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dropout(0.3, seed=dropout_seed), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    return model


def check_training_is_unchanged(dropout_seed):
    """Dropout (with `dropout_seed`, or None: on torch it then draws from torch's global
    generator), BatchNormalization and a metric: with the probe, the weights, moving statistics,
    dropout seed state and metrics are bit for bit those of training without it."""
    plain, probed = dropout_bn_model(dropout_seed), dropout_bn_model(dropout_seed)
    keras.utils.set_random_seed(11)  # the global generators as the probed fit will find them
    h_plain = plain.fit(X_LIN, Y_LIN, batch_size=25, epochs=3, shuffle=False, verbose=0)
    probe = kb.HessianProbe(every_n_steps=2, n_iterations=5, n_probes=3)
    keras.utils.set_random_seed(11)
    h_probed = probed.fit(X_LIN, Y_LIN, batch_size=25, epochs=3, shuffle=False, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == [0, 2, 4, 6, 8, 10]
    assert np.all(np.isfinite(probe.lambda_max)) and np.all(np.isfinite(probe.trace))
    for a, b in zip(plain.weights, probed.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    assert h_plain.history == h_probed.history
    assert "train_step" not in probed.__dict__


def check_fits_continue():
    """A second fit numbers its steps on; a fit and `kerasbp.train` without the probe measure
    nothing and leave the optimizer's variables as they were; `kerasbp.train` with it goes on."""
    model = linear()
    probe = kb.HessianProbe(every_n_steps=3, n_iterations=5, n_probes=0)
    for _ in range(2):
        model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == [0, 3, 6, 9]
    assert np.isnan(probe.trace).all()  # n_probes=0: no trace
    n_variables = len(model.optimizer.variables)
    model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0)  # no probe: no stale wrapped step
    kb.train(model, X_LIN, Y_LIN, batch_size=20, epochs=2)
    assert probe._state.written() == 4 and len(model.optimizer.variables) == n_variables
    kb.train(model, X_LIN, Y_LIN, batch_size=20, epochs=2, callbacks=[probe])  # steps 25..34
    assert probe.steps.tolist() == [0, 3, 6, 9, 27, 30, 33]


class StopAt(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("interrupted")


def check_an_interrupted_fit():
    """An exception in fit keeps every measurement; the next fit does not wrap the step twice;
    `detach()` takes the probe off (on JAX its buffers leave the optimizer)."""
    model = linear()
    n_variables = len(model.optimizer.variables)
    probe = kb.HessianProbe(every_n_steps=2, n_iterations=3, n_probes=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(X_LIN, Y_LIN, batch_size=10, epochs=1, verbose=0, callbacks=[probe, StopAt(4)])  # steps 0..4 ran
    assert model.__dict__.get("train_step") is not None  # Keras calls no on_train_end after an exception
    model.fit(X_LIN, Y_LIN, batch_size=10, epochs=1, verbose=0, callbacks=[probe])  # steps 5..14, no double wrapping
    assert probe.steps.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(X_LIN, Y_LIN, batch_size=10, epochs=1, verbose=0, callbacks=[probe, StopAt(1)])  # steps 15, 16
    probe.detach()
    assert probe.steps.tolist()[-1] == 16 and "train_step" not in model.__dict__
    assert len(model.optimizer.variables) == n_variables
    model.fit(X_LIN, Y_LIN, batch_size=10, epochs=1, verbose=0)  # no probe left in the train function
    assert probe.steps.tolist()[-1] == 16 and probe._state.written() == 9


def check_a_logger_beside_the_probe(per_example):
    """A relu network logged with and without a probe beside the logger: the same log, bit for bit
    (the probe's measuring passes reach neither the logger's records of relu outputs nor, with
    `per_example`, its taps of the Dense layers)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype("float32")
    y = rng.normal(size=(40, 2)).astype("float32")
    logs = []
    for callbacks in ([], [kb.HessianProbe(every_n_steps=2, n_iterations=3, n_probes=2)]):
        model = kb.compile_model(kb.dense_model([3, 6, 6, 2], ["relu", "relu", "linear"], seed=4), "adam", learning_rate=0.05)
        logger = kb.GradientLogger(record="full", per_example=per_example)
        model.fit(X, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[*callbacks, logger])
        logs.append(logger)
    np.testing.assert_array_equal(logs[0].losses, logs[1].losses)
    np.testing.assert_array_equal(logs[0].stats_array(), logs[1].stats_array())
    for a, b in zip(logs[0].gradients(), logs[1].gradients(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert logs[0].health().dead_units == logs[1].health().dead_units
    if per_example:
        np.testing.assert_array_equal(logs[0].per_example_norms(), logs[1].per_example_norms())
        for key, values in logs[0].noise.items():
            np.testing.assert_array_equal(values, logs[1].noise[key], err_msg=key)
