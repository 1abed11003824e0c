"""`kb.HessianProbe` on the JAX and torch backends, against linear regression's closed form and
the twin's exact Hessian, as tests/test_curvature.py checks it on TensorFlow.

Tolerances: float64 models (JAX in its 64-bit mode, tests/backends/conftest.py), but Keras 3.15
computes part of a float64 model in float32 off TensorFlow (`keras.backend.result_type` maps
float64 to float32 there: the mean of the MSE among others), so the products agree with the exact
values to float32 rounding: measured at most 1.2e-7 relative (linear regression) on this project's
machine, and 3e-8 (torch) or 3e-16 (JAX) on XOR; the tests allow 1e-6. On TensorFlow the same
checks hold to 1e-12.
"""

import os
import sys

import keras
import numpy as np
import pytest

import kerasbp as kb

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: curvature_checks

import curvature_checks as checks  # noqa: E402
from curvature_checks import X_LIN, Y_LIN, closed_form, linear  # noqa: E402

BACKEND = keras.backend.backend()
RTOL = 1e-6  # float32 rounding inside a float64 model off TensorFlow (module docstring)

pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="jit_compile=True means torch.compile only on torch (on JAX every step is jitted)")


def test_linear_regression_lambda_max_and_exact_trace_on_each_steps_batch(float64):
    checks.check_each_steps_batch(rtol_lambda=RTOL, rtol_trace=RTOL)


def test_dominant_negative_eigenvalue_fixed_data_and_kerasbp_train(float64):
    # Maximizing the squared error: every eigenvalue of H = -(2/n)[X 1]^T[X 1] is negative; the
    # shifted second iteration gives the largest (algebraic) one. Fixed data: the whole set.
    model = kb.linear_model(seed=0)
    model.compile(keras.optimizers.SGD(1e-4), loss=lambda y, p: -keras.ops.mean(keras.ops.square(y - p)))
    probe = kb.HessianProbe(every_n_steps=4, n_probes="exact", data=(X_LIN, Y_LIN))
    kb.train(model, X_LIN, Y_LIN, batch_size=10, epochs=2, callbacks=[probe])
    eigenvalues = np.linalg.eigvalsh(-closed_form(X_LIN))
    assert probe.steps.tolist() == [0, 4, 8, 12, 16]
    np.testing.assert_allclose(probe.lambda_max, eigenvalues[-1], rtol=RTOL)
    assert eigenvalues[-1] < 0 and abs(eigenvalues[0]) > abs(eigenvalues[-1])
    np.testing.assert_allclose(probe.trace, eigenvalues.sum(), rtol=RTOL)


@pytest.mark.parametrize("order", ["logger_first", "probe_first"])
def test_xor_lambda_max_equals_the_twins_exact_hessian_at_the_same_weights(float64, order):
    checks.check_xor_against_the_twin(order, rtol_lambda=RTOL, rtol_trace=RTOL)


def test_hutchinson_is_seeded_and_unbiased(float64):
    # The same draws (seed, step); the sums agree to float32 rounding (torch's threads add the
    # float32 parts in a varying order: measured 3.4e-8 apart), far below the probes' spread.
    checks.check_hutchinson(rtol_same_seed=RTOL)


@pytest.mark.parametrize("dropout_seed", [7, None])
def test_training_is_exactly_as_without_the_probe(float64, dropout_seed):
    checks.check_training_is_unchanged(dropout_seed)


def test_a_second_fit_continues_and_a_fit_without_the_probe_measures_nothing(float64):
    checks.check_fits_continue()


def test_an_interrupted_fit_keeps_its_measurements_and_detach_cleans_up(float64):
    checks.check_an_interrupted_fit()


def test_a_logger_beside_the_probe_logs_what_it_logs_alone():
    # The probe's measuring forward pass runs through the Dense layers that the per-example
    # statistics tap; on JAX both also keep their buffers in the optimizer's state and wrap the
    # same stateless step.
    checks.check_a_logger_beside_the_probe(per_example=True)


@torch_only
def test_jit_compile_is_refused_on_torch(float64):
    with pytest.raises(RuntimeError, match="HessianProbe on torch needs eager train steps. Received: a model compiled with jit_compile=True"):
        linear(jit_compile=True).fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe()])


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is checked on JAX (tests/test_curvature.py refuses tf.distribute)")
def test_a_keras_distribution_is_refused_by_name():
    model = linear()
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        with pytest.raises(RuntimeError, match="HessianProbe does not support keras.distribution yet. Received: DataParallel in effect"):
            model.fit(X_LIN, Y_LIN, epochs=1, verbose=0, callbacks=[kb.HessianProbe()])
    finally:
        keras.distribution.set_distribution(None)
