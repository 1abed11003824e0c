"""`compare`, `explain_backprop`, the twin's `gradient_check` and the scripts on the JAX and torch backends.

Run with `KERAS_BACKEND=jax python -m pytest tests/backends` (or `KERAS_BACKEND=torch`); skipped
under TensorFlow, whose tests are tests/test_compare.py, test_backprop.py and test_cli.py.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasbp as kb
from kerasbp import jobs
from kerasbp.cli import main_compare, main_linear, main_xor
from kerasbp.comparison_report import TOLERANCES
from kerasbp.logger.log import NOISE
from kerasbp.precision import floatx

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")
ROOT = Path(__file__).resolve().parents[2]


def script(name, *args, env=None):
    command = [sys.executable, str(ROOT / "scripts" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or dict(os.environ), timeout=600)


# Measured worst teacher-forced differences (XOR and linear model; SGD, Adam, RMSprop):
# float32 on both backends: loss 3.7e-7, gradient 1.3e-7, weights 2.5e-6, within float32's
# tolerances as on TensorFlow. float64: Keras on JAX and torch computes some float64 operations in
# float32 (the loss's mean, 1/n of a batch that is no power of two), so loss 1.7e-7, gradient
# 2.1e-7, weights 6.7e-6 (Adam): judged with float32's tolerances there (comparison_report.tolerances).
COMPARE_CASES = [
    ("xor", "adam", "float32"),
    ("linear", "sgd", "float32"),
    ("xor", "rmsprop", "float64"),
    ("linear", "adam", "float64"),
]


@pytest.mark.parametrize("task, optimizer, dtype", COMPARE_CASES, ids=["-".join(c) for c in COMPARE_CASES])
def test_compare_reports_ok(task, optimizer, dtype):
    report = jobs.run_compare(task=task, optimizer=optimizer, dtype=dtype, epochs=4 if task == "xor" else 2)
    assert report.ok, report.summary()
    assert report.backend == BACKEND and report.dtype == dtype
    assert report.tolerances == TOLERANCES["float32"]
    worst = report.to_dict()["worst"]["teacher"]
    assert worst["loss"] < 1e-6 and worst["gradient"] < 1e-6 and worst["weights"] < 1e-4, worst
    assert report.steps == (4 * 2 if task == "xor" else 2 * 4)  # batches of 3 (XOR), 30 (100 points)


def test_compare_records_dropout_masks_and_gradient_accumulation():
    # The twin applies the mask the copy's Dropout drew in each step (a host callback out of
    # the jitted step on JAX, eagerly on torch): a wrong or missing mask changes every gradient.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)).astype("float32"), rng.uniform(size=(32, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dropout(0.3, seed=1), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    report = kb.compare(model, X, y, epochs=2, batch_size=8)
    assert report.ok, report.summary()
    # Gradient accumulation: the GradientLogger records the micro-steps' gradients on these backends.
    model = kb.compile_model(kb.xor_model(seed=0), keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss="mse")
    report = kb.compare(model, *kb.xor_data(), epochs=2, batch_size=2)
    assert report.ok and report.steps == 4, report.summary()


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_explain_backprop_equals_the_twin(loss):
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "sgd", loss=loss)
    e = kb.explain_backprop(model, X, y)
    # JAX and torch differentiate the clipped probability, not the logits: dL/da is on the path.
    assert all(t.keras is not None for t in e.terms)
    assert e.max_rel_diff < 1e-5, e  # float32: measured up to 9.5e-7
    assert e.loss_keras == pytest.approx(e.loss_numpy, rel=1e-6)
    # the output layer's dL/dW is the model's own gradient of the batch loss: a_prev^T delta
    output = e.term("dense_1", "dL/dW").keras  # (4, 1)
    a_prev = keras.ops.convert_to_numpy(keras.ops.sigmoid(X @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()))
    np.testing.assert_allclose(output, a_prev.T @ e.term("dense_1", "delta = dL/dz").keras, rtol=1e-5)


def test_explain_backprop_in_float64(float64):
    # JAX: every term to float64 rounding (measured 3.4e-16), as on TensorFlow; torch computes
    # some float64 operations in float32 (measured 8.7e-8).
    X, y = kb.xor_data("float64")
    with floatx("float64"):
        model = kb.compile_model(kb.xor_model(seed=0), "sgd", loss="binary_crossentropy")
    e = kb.explain_backprop(model, X, y)
    assert e.max_rel_diff < (1e-12 if BACKEND == "jax" else 1e-6), e


def test_gradient_check_of_the_twin_read_from_keras():
    model = kb.compile_model(kb.xor_model(seed=0), "sgd", loss="binary_crossentropy")
    twin = kb.NumpyMLP.from_keras(model)
    assert twin.backend == BACKEND  # the twin follows this backend's cross-entropy path
    errors = kb.gradient_check(twin, *kb.xor_data(), loss="binary_crossentropy")
    assert max(errors) < 1e-6 and errors.kinks == 0


def test_the_flag_sets_the_backend_before_keras_starts():
    # --backend wins over KERAS_BACKEND: it is set before Keras is imported.
    proc = script("train_xor.py", "--backend", BACKEND, "--epochs", "20", "--json", env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["backend"] == BACKEND and result["steps"] == 20 and len(result["predictions"]) == 4


def test_the_scripts_in_this_process(capsys):
    # by default the configured backend (here the one Keras runs on); the same table as on TensorFlow
    assert main_xor(["--epochs", "300"]) == 0
    out = capsys.readouterr().out
    assert "trained adam (learning rate 0.05, loss binary_crossentropy) for 300 epochs = 300 optimizer steps" in out
    assert out.count(" ok\n") == 4 and "learned XOR: yes" in out
    # 500 Adam steps reach least squares from any initial weights (measured: MSE 1.0009x least
    # squares on torch, 1.0048x on JAX; slope within 0.4%)
    assert main_linear(["--backend", BACKEND, "--optimizer", "adam", "--learning-rate", "0.1", "--epochs", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == BACKEND and result["ols_mse"] <= result["mse"] < 1.01 * result["ols_mse"]
    assert result["relative_gaps"]["x"] < 0.01
    assert main_compare(["--backend", BACKEND, "--task", "linear", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"Keras on {BACKEND}" in out and "OK: every step agrees" in out


def test_devices_is_refused_by_name(capsys):
    # --devices N trains under tf.distribute.MirroredStrategy: TensorFlow only
    assert main_xor(["--devices", "2", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        f"error: --devices above 1 needs the TensorFlow backend (it trains with tf.distribute.MirroredStrategy); Keras is "
        f"running on '{BACKEND}'. Received: --devices=2\n"
    )
    with pytest.raises(ValueError, match="`devices` above 1 needs the TensorFlow backend"):
        jobs.run_linear(devices=2)


WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import json, sys
    sys.modules["tensorflow"] = None  # `import tensorflow` (and any tensorflow.*) raises ImportError
    import numpy as np
    import kerasbp as kb
    import keras

    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "adam", loss="binary_crossentropy")
    report = kb.compare(model, X, y, epochs=2, batch_size=2)
    explanation = kb.explain_backprop(model, X, y)
    errors = kb.gradient_check(kb.NumpyMLP.from_keras(model), X, y, loss="binary_crossentropy")
    logger = kb.GradientLogger(per_example=True)
    probe = kb.HessianProbe(every_n_steps=2, n_iterations=3, n_probes=2)
    model.fit(X, y, epochs=3, batch_size=4, shuffle=False, verbose=0, callbacks=[logger, probe])
    print(json.dumps({
        "backend": keras.backend.backend(),
        "compare_ok": report.ok,
        "explain": explanation.max_rel_diff,
        "gradient_check": max(errors),
        "logged_steps": logger.steps.tolist(),
        "noise": sorted(k for k, v in logger.noise.items() if np.isfinite(v).all()),
        "probed": probe.steps.tolist() if np.isfinite(probe.lambda_max).all() and np.isfinite(probe.trace).all() else None,
        "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow" and sys.modules[m] is not None),
    }))
    """
)


def test_kerasbp_works_without_tensorflow():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW], capture_output=True, text=True, env=dict(os.environ), timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == BACKEND and result["compare_ok"] and result["tensorflow"] == []
    assert result["explain"] < 1e-5 and result["gradient_check"] < 1e-6 and result["logged_steps"] == [0, 1, 2]
    assert result["noise"] == sorted(NOISE)
    assert result["probed"] == [0, 2]
