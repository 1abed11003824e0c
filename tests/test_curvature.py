"""`kb.HessianProbe` inside `fit` and `kerasbp.train`, against closed forms and the twin's exact Hessian.

Tolerances: float64 models throughout (the `float64` fixture), so the products are exact to
rounding; what remains is the power iteration's convergence, stated per test.
"""

import os
import sys

import keras
import numpy as np
import pytest

import kerasbp as kb
from kerasbp.reference import NumpyMLP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/: curvature_checks

import curvature_checks as checks  # noqa: E402
from curvature_checks import X_LIN, Y_LIN, closed_form, linear  # noqa: E402


def test_linear_regression_lambda_max_is_the_closed_form_on_each_steps_batch(float64):
    checks.check_each_steps_batch(rtol_lambda=1e-6, rtol_trace=1e-12)


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
    checks.check_xor_against_the_twin(order, rtol_lambda=1e-5, rtol_trace=1e-10)


def test_hutchinson_is_seeded_and_unbiased(float64):
    # Same seed, same draws (stateless in (seed, step)). The Hessian-vector products run on
    # TensorFlow's thread pool, whose float64 sums can differ by an ulp from run to run (CI saw
    # 4.4e-16 on 2.53), so the same-seed traces agree to 1e-13, far below the probes' spread.
    checks.check_hutchinson(rtol_same_seed=1e-13)


@pytest.mark.parametrize("dropout_seed", [7, None])
def test_training_is_exactly_as_without_the_probe(float64, dropout_seed):
    checks.check_training_is_unchanged(dropout_seed)


def test_a_second_fit_continues_and_a_fit_without_the_probe_measures_nothing(float64):
    checks.check_fits_continue()


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
        ({"data": X_LIN}, TypeError, r"`data` must be None or a tuple \(X, y\) or \(X, y, sample_weight\). Received an array of shape \(100, 1\)$"),
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
    with pytest.raises(ValueError, match=r"`data`'s X must have the model's input shape \(n, 1\). Received an X of shape \(100, 2\)"):
        model.fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe(data=(np.hstack([X_LIN, X_LIN]), Y_LIN))])
    with pytest.raises(ValueError, match=r"`data`'s y has 2 columns, but the model has 1 output\(s\). Received a y of shape \(100, 2\)"):
        model.fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe(data=(X_LIN, np.hstack([Y_LIN, Y_LIN])))])
    probe = kb.HessianProbe(every_n_steps=1, n_iterations=5, n_probes=0, data=(X_LIN[:, 0], Y_LIN))  # a 1-D X: one column
    model.fit(X_LIN, Y_LIN, batch_size=100, epochs=1, verbose=0, callbacks=[probe])
    np.testing.assert_allclose(probe.lambda_max, np.linalg.eigvalsh(closed_form(X_LIN))[-1], rtol=1e-3)  # 5 iterations


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


def test_an_interrupted_fit_keeps_its_measurements_and_detach_cleans_up(float64):
    checks.check_an_interrupted_fit()


def test_docstring_examples_run():
    import doctest

    import kerasbp.curvature

    results = doctest.testmod(kerasbp.curvature, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results


def test_a_gradient_logger_beside_the_probe_logs_what_it_logs_alone():
    # A relu network: the logger also hooks the relu layers' call to track dead units.
    checks.check_a_logger_beside_the_probe(per_example=False)


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
