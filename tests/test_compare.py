"""compare: Keras against its NumPy twin, step by step."""

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasbp as kb
import kerasbp.comparison
from kerasbp.cli import main_compare
from kerasbp.comparison import TOLERANCES, compare, relative_difference
from kerasbp.jobs import run_compare
from kerasbp.reference import optimizers as twin_optimizers

ROOT = Path(__file__).resolve().parents[1]
CASES = [("xor", "binary_crossentropy"), ("xor", "mse"), ("linear", "mse")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("task, loss", CASES, ids=["xor-bce", "xor-mse", "linear"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_compare_is_ok_for_every_optimizer_task_and_dtype(optimizer, task, loss, dtype):
    # Batch 3 of 4 XOR rows and batch 30 of 100 linear points leave a partial last batch.
    epochs = 30 if task == "xor" else 3
    report = run_compare(task, optimizer, learning_rate=0.1 if task == "xor" else None, epochs=epochs, loss=loss, dtype=dtype)
    assert report.ok, report.summary()
    assert report.steps == epochs * (2 if task == "xor" else 4)
    assert report.dtype == dtype and report.tolerances == TOLERANCES[dtype]
    worst = report.to_dict()["worst"]["teacher"]
    for quantity, value in worst.items():
        assert value <= TOLERANCES[dtype][quantity]
    if dtype == "float64":  # far inside the tolerance: this is agreement to rounding
        assert max(worst.values()) < 1e-12


def broken_rmsprop_apply(self, params, grads, state):
    # The textbook form: epsilon outside the square root (Keras puts it inside).
    new_params, new_vs = [], []
    for w, g, v in zip(params, grads, state.velocities, strict=True):
        v = self.rho * v + (1 - self.rho) * g * g
        new_vs.append(v)
        new_params.append(w - self.learning_rate * g / (np.sqrt(v) + self.epsilon))
    return new_params, state._replace(iterations=state.iterations + 1, velocities=tuple(new_vs))


def broken_adam_apply(self, params, grads, state):
    # Adam without bias correction.
    new_params, ms, vs = [], [], []
    for w, g, m, v in zip(params, grads, state.momentums, state.velocities, strict=True):
        m = self.beta_1 * m + (1 - self.beta_1) * g
        v = self.beta_2 * v + (1 - self.beta_2) * g * g
        ms.append(m)
        vs.append(v)
        new_params.append(w - self.learning_rate * m / (np.sqrt(v) + self.epsilon))
    return new_params, state._replace(iterations=state.iterations + 1, momentums=tuple(ms), velocities=tuple(vs))


@pytest.mark.parametrize(
    "cls, broken, optimizer, dtype",
    [
        (twin_optimizers.RMSprop, broken_rmsprop_apply, "rmsprop", "float64"),
        (twin_optimizers.RMSprop, broken_rmsprop_apply, "rmsprop", "float32"),
        (twin_optimizers.Adam, broken_adam_apply, "adam", "float32"),
    ],
    ids=["rmsprop-epsilon-outside-root-float64", "rmsprop-epsilon-outside-root-float32", "adam-no-bias-correction"],
)
def test_a_broken_twin_is_caught_at_the_first_step_and_variable(monkeypatch, cls, broken, optimizer, dtype):
    # Small gradients make epsilon matter: the linear model started at the least-squares answer.
    X, y = kb.linear_data()
    model = kb.compile_model(kb.linear_model(seed=0), optimizer, learning_rate=0.01)
    A = np.hstack([X, np.ones_like(X)])
    w, b = np.linalg.lstsq(A, y[:, 0], rcond=None)[0]
    model.set_weights([np.array([[w + 1e-3]], "float32"), np.array([b], "float32")])
    assert compare(model, X, y, epochs=2, batch_size=30, dtype=dtype).ok  # the real twin agrees
    monkeypatch.setattr(cls, "apply", broken)
    report = compare(model, X, y, epochs=2, batch_size=30, dtype=dtype)
    assert not report.ok
    step, variable, quantity, _, rel = report.first_failure
    assert (step, quantity) == (0, "weights")  # the update rule differs from the first step on
    assert variable == report.names[0] and variable.endswith("kernel")
    assert rel > TOLERANCES[dtype]["weights"]
    assert "NOT OK: first difference at step 0" in report.summary()
    # gradients and losses are still right: the report points at the optimizer, not backprop
    assert report.to_dict()["worst"]["teacher"]["gradient"] <= TOLERANCES[dtype]["gradient"]


def test_report_exports(tmp_path):
    report = run_compare("xor", "adam", epochs=3)
    d = json.loads(report.to_json())
    assert d["ok"] is True and d["steps"] == 6 and len(d["keras_losses"]) == 6
    assert d["names"] == report.names and d["first_failure"] is None
    np.testing.assert_allclose(d["keras_losses"], d["twin_losses"], rtol=1e-5)
    report.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("step,mode,variable") and len(lines) == 1 + 2 * 6 * 4


def test_compare_leaves_the_model_alone():
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "adam", loss="binary_crossentropy")
    before = model.get_weights()
    compare(model, X, y, epochs=3, batch_size=4)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kb.compile_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="hard_sigmoid")]), "sgd"), "hard_sigmoid"),
        (lambda: kb.compile_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), keras.layers.GaussianNoise(0.1)]), "sgd"), "GaussianNoise"),
        (lambda: kb.compile_model(kb.xor_model(seed=0), keras.optimizers.Muon()), "Muon"),
        (lambda: kb.compile_model(kb.xor_model(seed=0), keras.optimizers.SGD(loss_scale_factor=2.0)), "loss_scale_factor"),
        (lambda: kb.compile_model(kb.xor_model(seed=0), keras.optimizers.Adam(lambda: 0.01)), "callable"),
        (lambda: kb.compile_model(kb.xor_model(seed=0), "sgd", loss="hinge"), "hinge|Hinge"),
    ],
    ids=["hard-sigmoid", "gaussian-noise", "muon", "loss-scale", "callable-lr", "hinge-loss"],
)
def test_unsupported_models_losses_and_options_are_refused(make, match):
    X, y = kb.xor_data()
    with pytest.raises(ValueError, match=match):
        compare(make(), X[:, :2], y, epochs=1)


def test_bad_arguments():
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "sgd")
    with pytest.raises(ValueError, match="epochs"):
        compare(model, X, y, epochs=0)
    with pytest.raises(ValueError, match="dtype"):
        compare(model, X, y, dtype="float16")
    with pytest.raises(ValueError, match="must be compiled"):
        compare(kb.xor_model(seed=0), X, y)
    with pytest.raises(ValueError, match="X with 4 rows"):
        compare(model, X, y[:3])


def test_script_exit_status_follows_the_report(monkeypatch, capsys):
    assert main_compare(["--task", "linear", "--optimizer", "rmsprop", "--epochs", "1"]) == 0
    assert "OK: every step agrees" in capsys.readouterr().out
    monkeypatch.setattr(twin_optimizers.RMSprop, "apply", broken_rmsprop_apply)
    assert main_compare(["--task", "linear", "--optimizer", "rmsprop", "--epochs", "1", "--dtype", "float64", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["first_failure"]["step"] == 0
    assert main_compare(["--optimizer", "muon"]) == 2
    assert "--optimizer must be one of" in capsys.readouterr().err


def test_script_runs_as_a_program():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), "--task", "xor", "--optimizer", "adam", "--epochs", "5", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout)["ok"] is True


def test_a_gradient_whose_terms_cancel_is_judged_against_its_terms():
    # XOR, RMSprop at 0.01, 150 epochs: at step 41 the output bias gradient is ~3e-5 because the
    # batch's deltas cancel; float32 leaves ~7e-9 of rounding, 3e-4 of the result but ~1e-7 of the
    # terms summed. Judged against the result this was a false alarm.
    report = run_compare("xor", "rmsprop", learning_rate=0.01, epochs=150)
    assert report.ok, report.summary()


def test_compare_after_training_with_adam_is_ok():
    # The README's example: a model trained 200 epochs with Adam, then compared. Adam divides a
    # gradient by its own size, so the twin's update rule is checked on Keras's gradient.
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    model.fit(X, y, epochs=200, batch_size=4, verbose=0)
    report = compare(model, X, y, epochs=50, batch_size=3)
    assert report.ok, report.summary()


def test_divergence_is_reported_not_refused(capsys):
    report = run_compare("linear", "sgd", learning_rate=10, epochs=50)
    assert not report.ok and report.diverged_at == report.steps and 0 < report.steps < 200
    assert report.first_failure is None  # every step before it agreed
    assert f"training diverged at step {report.diverged_at}" in report.summary()
    assert main_compare(["--task", "linear", "--learning-rate", "10", "--epochs", "50"]) == 1
    out, err = capsys.readouterr()
    assert "training diverged" in out and err == ""


def test_relative_difference_handles_a_zero_scale():
    assert relative_difference(1e-3, 2e-3) == 0.5
    assert relative_difference(0.0, 0.0) == 0.0  # nothing expected, nothing found
    assert relative_difference(1e-6, 0.0) == np.inf  # a difference where none was expected
    assert np.isnan(relative_difference(np.nan, 0.0))  # a diverged twin stays NaN


def broken_sgd_apply_that_drifts(self, params, grads, state):
    # An update that moves the weights by 5e-5 whatever the gradient (a stray weight decay, say).
    return [np.asarray(p) + 5e-5 for p in params], state._replace(iterations=state.iterations + 1)


def test_a_twin_that_moves_where_keras_does_not_is_caught(monkeypatch):
    # A perfect fit: zero weights and zero targets give Keras a loss and gradients of exactly 0, so
    # its update is 0. A twin that still moves by 5e-5 (below the float32 tolerance 1e-4 in absolute
    # terms) must be flagged: against a zero update any difference is infinitely large.
    X, _ = kb.linear_data(n_samples=8)
    y = np.zeros((8, 1))
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    model.set_weights([np.zeros((1, 1), "float32"), np.zeros(1, "float32")])
    assert compare(model, X, y, epochs=1, batch_size=4).ok  # the real twin agrees: 0 against 0
    monkeypatch.setattr(twin_optimizers.SGD, "apply", broken_sgd_apply_that_drifts)
    report = compare(model, X, y, epochs=1, batch_size=4)
    assert not report.ok, report.summary()
    step, variable, quantity, abs_diff, rel = report.first_failure
    assert (step, variable, quantity) == (0, report.names[0], "weights")
    assert abs_diff == pytest.approx(5e-5, rel=1e-6) and rel == np.inf


@pytest.mark.parametrize(
    "twin_loss, name",
    [(kb.reference.MeanSquaredError(), "mse"), (kb.reference.BinaryCrossentropy(), "binary_crossentropy")],
    ids=["mse", "bce"],
)
def test_compare_accepts_a_twin_loss_object(twin_loss, name):
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "adam", loss=name)
    by_object = compare(model, X, y, epochs=2, batch_size=3, loss=twin_loss)
    by_name = compare(model, X, y, epochs=2, batch_size=3, loss=name)
    assert by_object.ok and by_object.loss == by_name.loss
    np.testing.assert_array_equal(by_object.keras_losses, by_name.keras_losses)  # same computation: exact


def test_report_names_the_keras_optimizer_class():
    for optimizer, class_name in (("sgd", "SGD"), ("adam", "Adam"), ("rmsprop", "RMSprop")):
        report = run_compare("xor", optimizer, epochs=1)
        assert report.optimizer_name == class_name
        assert report.to_dict()["optimizer_name"] == class_name


def test_docstring_examples_run():
    results = doctest.testmod(kerasbp.comparison, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results
