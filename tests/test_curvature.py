"""`kb.HessianProbe` inside `fit` and `kerasbp.train`, against closed forms and the twin's exact Hessian.

Tolerances: float64 models throughout (the `float64` fixture), so the products are exact to
rounding; what remains is the power iteration's convergence, stated per test.
"""

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


def test_linear_regression_lambda_max_is_the_closed_form_on_each_steps_batch(float64):
    # Batches of 30: three full ones and a last one of 10, each probed at the weights before its update.
    probe = kb.HessianProbe(every_n_steps=1, n_probes="exact")
    model = linear()
    model.fit(X_LIN, Y_LIN, batch_size=30, epochs=2, shuffle=False, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == list(range(8))
    batches = [X_LIN[s : s + 30] for s in (0, 30, 60, 90)] * 2
    expected = np.array([np.linalg.eigvalsh(closed_form(b))[-1] for b in batches])
    np.testing.assert_allclose(probe.lambda_max, expected, rtol=1e-6)  # 20 iterations (the default)
    traces = np.array([np.trace(closed_form(b)) for b in batches])
    np.testing.assert_allclose(probe.trace, traces, rtol=1e-12)  # exact: the basis vectors
    np.testing.assert_allclose(probe.stability_threshold, 2 / 0.1, rtol=1e-12)
    assert "train_step" not in model.__dict__  # unwrapped at the end


def test_fixed_data_and_kerasbp_train_and_steps_per_execution(float64):
    full = np.linalg.eigvalsh(closed_form(X_LIN))[-1]
    results = []
    for run in ("fit", "fit_spe3", "train"):
        probe = kb.HessianProbe(every_n_steps=4, n_iterations=20, n_probes=0, data=(X_LIN, Y_LIN))
        model = linear(steps_per_execution=3) if run == "fit_spe3" else linear()
        if run == "train":
            kb.train(model, X_LIN, Y_LIN, batch_size=10, epochs=3, callbacks=[probe])  # several epochs per call
        else:
            model.fit(X_LIN, Y_LIN, batch_size=10, epochs=3, shuffle=False, verbose=0, callbacks=[probe])
        assert probe.steps.tolist() == list(range(0, 30, 4)), run
        np.testing.assert_allclose(probe.lambda_max, full, rtol=1e-6)
        assert np.isnan(probe.trace).all()  # n_probes=0: no trace
        results.append(model.get_weights())
    for weights in results[1:]:  # the same training whatever the loop
        for a, b in zip(results[0], weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_dominant_negative_eigenvalue_gives_the_largest_algebraic_one(float64):
    # Maximizing the squared error: H = -(2/n)[X 1]^T[X 1], every eigenvalue negative. Power
    # iteration alone would return the most negative one; the shift gives the largest.
    model = kb.linear_model(seed=0)
    model.compile(keras.optimizers.SGD(1e-4), loss=lambda y, p: -keras.ops.mean(keras.ops.square(y - p)))
    probe = kb.HessianProbe(every_n_steps=1, n_probes="exact")
    model.fit(X_LIN, Y_LIN, batch_size=100, epochs=2, verbose=0, callbacks=[probe])
    eigenvalues = np.linalg.eigvalsh(-closed_form(X_LIN))
    np.testing.assert_allclose(probe.lambda_max, eigenvalues[-1], rtol=1e-6)
    assert eigenvalues[-1] < 0 and abs(eigenvalues[0]) > abs(eigenvalues[-1])
    np.testing.assert_allclose(probe.trace, eigenvalues.sum(), rtol=1e-12)


@pytest.mark.parametrize("order", ["logger_first", "probe_first"])
def test_xor_lambda_max_equals_the_twins_exact_hessian_at_the_same_weights(float64, order):
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=1), "sgd", learning_rate=2.0, loss="binary_crossentropy")
    probe = kb.HessianProbe(every_n_steps=5, n_iterations=100, n_probes="exact")
    logger = kb.GradientLogger(every_n_steps=5, snapshots=True)  # the weights before each probed step
    callbacks = [logger, probe] if order == "logger_first" else [probe, logger]
    model.fit(X, y, batch_size=4, epochs=20, verbose=0, callbacks=callbacks)
    assert probe.steps.tolist() == logger.steps.tolist() == [0, 5, 10, 15]
    twin = NumpyMLP.from_keras(model)
    for k, weights in enumerate(zip(*logger.weights(), strict=True)):
        twin.set_params(weights)
        H = twin.hessian(X, y, "binary_crossentropy")
        eigenvalues = np.linalg.eigvalsh(H)
        np.testing.assert_allclose(probe.lambda_max[k], eigenvalues[-1], rtol=1e-5)  # 100 iterations
        np.testing.assert_allclose(probe.trace[k], np.trace(H), rtol=1e-10)
    assert model.train_function is None or "train_step" not in model.__dict__


def test_hutchinson_is_seeded_and_unbiased(float64):
    H = closed_form(X_LIN)
    runs = {}
    for seed in (0, 0, 1):
        probe = kb.HessianProbe(every_n_steps=1, n_iterations=2, n_probes=400, seed=seed)
        linear().fit(X_LIN, Y_LIN, batch_size=100, epochs=3, verbose=0, callbacks=[probe])
        runs.setdefault(seed, []).append(probe.trace)
    # Same seed, same draws (stateless in (seed, step)). The Hessian-vector products run on
    # TensorFlow's thread pool, whose float64 sums can differ by an ulp from run to run (CI saw
    # 4.4e-16 on 2.53), so the same-seed traces agree to 1e-13, far below the probes' spread.
    np.testing.assert_allclose(runs[0][0], runs[0][1], rtol=1e-13, atol=0)
    assert np.min(np.abs(runs[0][0] - runs[1][0])) > 1e-6  # another seed, other draws
    assert len(set(runs[0][0].tolist())) == 3  # new probes at each step
    # z.Hz = tr H + 2 H_01 z_0 z_1: standard deviation 2 |H_01| / sqrt(400) for the mean of 400
    sigma = 2 * abs(H[0, 1]) / np.sqrt(400)
    assert np.all(np.abs(np.concatenate([runs[0][0], runs[1][0]]) - np.trace(H)) < 5 * sigma)


def dropout_bn_model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dropout(0.3, seed=7),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    return model


def test_training_is_exactly_as_without_the_probe(float64):
    plain, probed = dropout_bn_model(), dropout_bn_model()
    for a, b in zip(plain.get_weights(), probed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    h_plain = plain.fit(X_LIN, Y_LIN, batch_size=25, epochs=3, shuffle=False, verbose=0)
    probe = kb.HessianProbe(every_n_steps=2, n_iterations=5, n_probes=3)
    h_probed = probed.fit(X_LIN, Y_LIN, batch_size=25, epochs=3, shuffle=False, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == [0, 2, 4, 6, 8, 10]
    assert np.all(np.isfinite(probe.lambda_max)) and np.all(np.isfinite(probe.trace))
    # Weights, moving statistics, dropout seed state and metrics: bit for bit.
    for a, b in zip(plain.weights, probed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert h_plain.history == h_probed.history
    assert "train_step" not in probed.__dict__


def test_a_second_fit_continues_and_a_fit_without_the_probe_measures_nothing(float64):
    model = linear()
    probe = kb.HessianProbe(every_n_steps=3, n_iterations=5, n_probes=0)
    model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0, callbacks=[probe])
    model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0, callbacks=[probe])
    assert probe.steps.tolist() == [0, 3, 6, 9]
    model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0)  # no probe: no stale wrapped step
    kb.train(model, X_LIN, Y_LIN, batch_size=20, epochs=2)
    assert int(probe._state.count.numpy()) == 4
    kb.train(model, X_LIN, Y_LIN, batch_size=20, epochs=2, callbacks=[probe])  # steps 25..34
    assert probe.steps.tolist() == [0, 3, 6, 9, 27, 30, 33]


def test_stability_threshold_follows_a_schedule(float64):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = kb.linear_model(seed=0)
    model.compile(keras.optimizers.SGD(schedule), "mse")
    probe = kb.HessianProbe(every_n_steps=2, n_iterations=3, n_probes=0)
    model.fit(X_LIN, Y_LIN, batch_size=20, epochs=1, verbose=0, callbacks=[probe])
    np.testing.assert_allclose(probe.learning_rate, 0.1 * 0.5 ** np.array([0, 2, 4]), rtol=1e-7)  # Keras schedules compute in float32
    np.testing.assert_allclose(probe.stability_threshold, 2 / probe.learning_rate)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"every_n_steps": 0}, ValueError, "every_n_steps"),
        ({"every_n_steps": 2.5}, TypeError, "every_n_steps"),
        ({"n_iterations": 0}, ValueError, "n_iterations"),
        ({"n_probes": -1}, ValueError, "`n_probes` must be an integer >= 0 or 'exact'. Received: n_probes=-1"),
        ({"n_probes": "all"}, ValueError, "Received: n_probes='all'"),
        ({"n_probes": 2.0}, TypeError, "n_probes"),
        ({"n_probes": True}, TypeError, "n_probes"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": None}, TypeError, "seed"),
        ({"data": X_LIN}, TypeError, "`data` must be None or a tuple"),
        ({"data": (X_LIN, Y_LIN[:50])}, ValueError, "same number of rows"),
        ({"data": (X_LIN * np.nan, Y_LIN)}, ValueError, "finite"),
        ({"data": (X_LIN.astype(str), Y_LIN)}, TypeError, "numeric"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kb.HessianProbe(**kwargs)


def test_refuses_an_uncompiled_model_and_wrong_data_width():
    with pytest.raises(RuntimeError, match="compiled"):
        probe = kb.HessianProbe()
        probe.set_model(kb.linear_model(seed=0))
        probe.on_train_begin()
    model = linear()
    with pytest.raises(ValueError, match="features"):
        model.fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe(data=(np.hstack([X_LIN, X_LIN]), Y_LIN))])


# ---------------------------------------------------------------- plot_curvature


def test_plot_curvature_draws_lambda_max_and_the_threshold():
    import matplotlib.pyplot as plt
    from types import SimpleNamespace

    from kerasbp.plotting import plot_curvature

    probe = SimpleNamespace(steps=np.array([0, 10, 20]), lambda_max=np.array([1.0, 5.0, 30.0]), stability_threshold=np.full(3, 20.0), trace=np.array([2.0, 9.0, 40.0]))
    fig = plot_curvature(probe, trace=True)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"lambda_max", "2 / learning rate", "trace"}
    np.testing.assert_array_equal(lines["lambda_max"].get_ydata(), [1.0, 5.0, 30.0])
    np.testing.assert_array_equal(lines["2 / learning rate"].get_xdata(), [0, 10, 20])
    assert "1 of 3 probed steps above 2 / lr" in fig.axes[0].get_title()
    assert fig.axes[0].get_yscale() == "log"
    fig, ax = plt.subplots()
    assert plot_curvature(probe, ax=ax, log_scale=False) is fig and ax.get_yscale() == "linear"
    plt.close("all")
    with pytest.raises(TypeError, match="`probe` must be a kerasbp.HessianProbe"):
        plot_curvature(np.ones(3))
    with pytest.raises(ValueError, match="holds no measurements"):
        plot_curvature(kb.HessianProbe())
    with pytest.raises(TypeError, match="`ax` must be a matplotlib Axes"):
        plot_curvature(probe, ax="left")


@pytest.mark.slow  # checks only that the benchmark script runs (tests/test_benchmarks.py does so for run.py by default)
def test_curvature_benchmark_quick_run(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "curvature.py"
    out = tmp_path / "curvature.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["overhead"]["fit"]["ratio_to_fit"] == 1.0
    assert r["overhead"]["probed_steps_per_run"] == 2  # 20 steps, a probe every 10
    assert r["probe_cost"]["probe_ms"] > 0 and r["probe_cost"]["implied_ratio_every_100"] > 1
    assert "implied cost of a probe every 100 steps" in proc.stdout


def test_refuses_a_distribution_strategy():
    import tensorflow as tf

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = linear()
    with pytest.raises(RuntimeError, match="does not support distribution strategies yet. Received a model compiled under MirroredStrategy"):
        model.fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe()])
    assert "train_step" not in model.__dict__


class StopAt(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("interrupted")


def test_an_interrupted_fit_keeps_its_measurements_and_detach_cleans_up(float64):
    model = linear()
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
    model.fit(X_LIN, Y_LIN, batch_size=10, epochs=1, verbose=0)  # no probe left in the train function
    assert probe.steps.tolist()[-1] == 16 and int(probe._state.count.numpy()) == 9


def test_docstring_examples_run():
    import doctest

    import kerasbp.curvature

    results = doctest.testmod(kerasbp.curvature, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results


def test_a_gradient_logger_beside_the_probe_logs_what_it_logs_alone():
    # A relu network: the logger also hooks the relu layers' call to track dead units, and the
    # probe's forward passes must not reach its records.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype("float32")
    y = rng.normal(size=(40, 2)).astype("float32")
    logs = []
    for callbacks in ([], [kb.HessianProbe(every_n_steps=2, n_iterations=3, n_probes=2)]):
        model = kb.compile_model(kb.dense_model([3, 6, 6, 2], ["relu", "relu", "linear"], seed=4), "adam", learning_rate=0.05)
        logger = kb.GradientLogger(record="full")
        model.fit(X, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[*callbacks, logger])
        logs.append(logger)
    np.testing.assert_array_equal(logs[0].losses, logs[1].losses)
    np.testing.assert_array_equal(logs[0].stats_array(), logs[1].stats_array())
    for a, b in zip(logs[0].gradients(), logs[1].gradients(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert logs[0].health().dead_units == logs[1].health().dead_units


@pytest.mark.parametrize(
    "activations, loss",
    [(["tanh", "softmax"], "categorical_crossentropy"), (["sigmoid", "sigmoid"], "binary_crossentropy"), (["silu", "linear"], "mse")],
    ids=["tanh-softmax-cce", "sigmoid-bce", "silu-mse"],
)
def test_twin_hessian_equals_tensorflows_jacobian_of_the_gradient(float64, activations, loss):
    # Reverse-over-reverse in TensorFlow: an independent check of the twin's R-operator from Keras's side.
    import tensorflow as tf

    rng = np.random.default_rng(2)
    d = 1 if loss == "binary_crossentropy" else 3
    X = rng.normal(size=(7, 3))
    y = np.eye(d)[np.arange(7) % d] if loss == "categorical_crossentropy" else rng.random((7, d)).round()
    model = kb.compile_model(kb.dense_model([3, 4, d], activations, seed=5), "sgd", loss=loss)
    weights = model.trainable_variables
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = model.compute_loss(X, y, model(X, training=True))
        grads = inner.gradient(value, weights)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
    blocks = outer.jacobian(flat, weights)  # per variable: (n_params, *shape)
    H_tf = tf.concat([tf.reshape(b, [flat.shape[0], -1]) for b in blocks], axis=1).numpy()
    H = NumpyMLP.from_keras(model).hessian(X, y, loss)
    np.testing.assert_allclose(H, H_tf, rtol=0, atol=1e-12 * np.abs(H_tf).max())
