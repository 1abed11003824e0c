"""`GradientLogger(per_example=True)` on the torch backend against brute force (the NumPy twin's
gradient of each example's own loss): every per-example norm and statistic, and the mean of the
per-example gradients equals the logged batch gradient. Skipped unless `KERAS_BACKEND=torch`.

Tolerances: those of a float32 model in tests/test_per_example.py (`float32_rtol`, `gsnr_rtol`
with float32's eps), for float64 models too: Keras 3.15 on torch computes part of a float64
model in float32 (`keras.backend.result_type` maps float64 to float32 off TensorFlow; see
tests/backends/test_backend_logger.py), so such a model matches the twin to float32 precision
only. On TensorFlow the same checks hold to 1e-10 in float64.
"""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: per_example_checks

from kerasbp import GradientLogger  # noqa: E402
from per_example_checks import check_against_brute_force, check_mlp, data, mlp  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch backend tests: run with KERAS_BACKEND=torch")


@pytest.mark.parametrize(
    "loss, dtype",
    [("mse", "float64"), ("binary_crossentropy", "float32"), ("categorical_crossentropy", "float64")],
    ids=["mse-float64", "bce-float32", "cce-float64"],
)
def test_norms_and_statistics_equal_brute_force(loss, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    # relu, tanh, sigmoid hidden layers, a dead relu unit, a partial batch (`per_example_checks.check_mlp`)
    logger = check_mlp(loss, dtype, "float32")
    assert np.isfinite(logger.noise_scale())


def test_every_n_steps_loss_scaling_and_sample_weights():
    # Steps 0, 2, 4, 6 logged; the deltas and gradients carry the loss scale (2^15), divided out;
    # example i's loss is weighed by its sample weight, as Keras weighs it.
    X, y = data(20, 4, "binary_crossentropy", seed=6)
    w = np.random.default_rng(2).uniform(0.2, 3.0, size=20).astype("float32")
    model = mlp("binary_crossentropy")
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)), "binary_crossentropy")
    logger = GradientLogger(per_example=True, every_n_steps=2, snapshots=True, record="full")
    model.fit(X, y, sample_weight=w, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)  # 4 steps per epoch
    assert logger.steps.tolist() == [0, 2, 4, 6] and logger.loss_scales[0] == 2.0**15
    check_against_brute_force(logger, model, X, y, "binary_crossentropy", 6, "float32", sample_weight=w)


@pytest.mark.parametrize(
    "layer, compile_kwargs, match",
    [
        (keras.layers.BatchNormalization(), {}, "through BatchNormalization layer"),
        (keras.layers.LayerNormalization(), {}, "on the torch backend supports Dense layers only. Received: layer .* \\(LayerNormalization\\)"),
        (None, {"jit_compile": True}, "needs eager train steps"),
    ],
    ids=["batch-norm", "layer-norm", "jit-compile"],
)
def test_what_torch_cannot_do_is_refused_by_name(layer, compile_kwargs, match):
    layers = [keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), *([layer] if layer is not None else []), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile("sgd", "mse", **compile_kwargs)
    X, y = data(8, 4, "mse")
    with pytest.raises(ValueError, match=match):
        model.fit(X, y[:, :1], epochs=1, callbacks=[GradientLogger(per_example=True)], verbose=0)
