"""The floor of `benchmarks/step_floor.py` (table 6 of `benchmarks/run.py`) computes the
statistics' bare reductions of the step it is added to: checked against the logger's own
statistics of the same step, on JAX and torch. Its timings are measured there, never asserted."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasbp as kb

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import paired  # noqa: E402  (the benchmarks' folder, added above)
import step_floor  # noqa: E402


def as_table(buffer, n):
    """The floor's buffer as `(rows, n_variables, 5)`: sum, sum of squares, min, max, weight squares."""
    if BACKEND == "jax":
        return np.asarray(buffer.numpy())
    flat = buffer.numpy()  # torch: the sums, the sums of squares, the (min, max) pairs, the weight squares
    return np.stack([flat[:, :n], flat[:, n : 2 * n], flat[:, 2 * n : 4 * n : 2], flat[:, 2 * n + 1 : 4 * n : 2], flat[:, 4 * n :]], axis=2)


def test_the_floor_reduces_the_gradient_and_weights_the_logger_reports():
    keras.utils.set_random_seed(3)
    X, y = paired.wide_data(256, seed=1)
    floor_model, logged_model = paired.wide_model(), paired.wide_model()
    logged_model.set_weights(floor_model.get_weights())
    buffer = (step_floor._add_floor_jax if BACKEND == "jax" else step_floor._add_floor_torch)(floor_model)
    logger = kb.GradientLogger()
    for model, callbacks in ((floor_model, []), (logged_model, [logger])):
        model.fit(X, y, batch_size=128, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    table = as_table(buffer, len(floor_model.trainable_variables))
    rows = table[:2]  # the two steps
    sizes = np.array([np.prod(s) for s in logger.shapes])
    # float32 reductions of the same numbers in other orders: 1e-4 relative, and the sums of
    # near-zero means also 1e-6 absolute.
    np.testing.assert_allclose(rows[:, :, 0] / sizes, logger.stat("mean"), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(rows[:, :, 1]), logger.stat("norm"), rtol=1e-4)
    np.testing.assert_allclose(rows[:, :, 2], logger.stat("min"), rtol=1e-4)
    np.testing.assert_allclose(rows[:, :, 3], logger.stat("max"), rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(rows[:, :, 4]), logger.stat("weight_norm"), rtol=1e-4)
    assert not table[2:].any()  # one row a step


def test_the_table_times_all_three_steps_and_refuses_tensorflow(monkeypatch):
    out = step_floor.bench_step_floor(3, kb.GradientLogger)
    assert set(out) == {"step_us", "floor_us", "logged_us", "floor_ratio", "logged_ratio"}
    assert all(v > 0 for v in out.values())
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ValueError, match="JAX and torch backends; Keras runs on 'tensorflow'"):
        step_floor.bench_step_floor(3, kb.GradientLogger)
