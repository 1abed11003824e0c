"""`GradientLogger(per_example=True)` on the JAX and torch backends against brute force (the NumPy
twin's gradient of each example's own loss): every per-example norm and statistic, and the mean of
the per-example gradients equals the logged batch gradient. Skipped unless `KERAS_BACKEND=jax` or
`torch`.

Tolerances: those of a float32 model in tests/test_per_example.py (`float32_rtol`, `gsnr_rtol`
with float32's eps), for float64 models too: Keras 3.15 off TensorFlow computes part of a float64
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

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")


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


def test_dropout_uses_the_mask_of_the_step():
    # The logged statistics come from the step's own dropout mask (on JAX a second pass at the
    # step's seed state draws it again). A Dropout layer with the same seed, called once per step
    # like the model's, draws the same masks on the host: brute force with them equals the logger.
    X, y = data(12, 4, "mse", seed=5)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)
    replay = keras.layers.Dropout(0.5, seed=1)
    masks = [keras.ops.convert_to_numpy(replay(np.ones((4, 8), "float32"), training=True)) != 0 for _ in range(3)]
    assert 0 < np.mean(masks) < 1 and not np.array_equal(masks[0], masks[1])
    check_against_brute_force(logger, model, X, y, "mse", 4, "float32", masks=[[m.astype("float32") for m in masks]])


LAYERS_REFUSED = "on the {} backend supports Dense layers only. Received: layer .* \\(LayerNormalization\\)"


@pytest.mark.parametrize(
    "layer, compile_kwargs, match",
    [
        (keras.layers.BatchNormalization(), {}, "through BatchNormalization layer"),
        (keras.layers.LayerNormalization(), {}, LAYERS_REFUSED.format({"jax": "JAX"}.get(BACKEND, BACKEND))),
        *([(None, {"jit_compile": True}, "needs eager train steps")] if BACKEND == "torch" else []),
    ],
)
def test_what_the_backend_cannot_do_is_refused_by_name(layer, compile_kwargs, match):
    layers = [keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), *([layer] if layer is not None else []), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile("sgd", "mse", **compile_kwargs)
    X, y = data(8, 4, "mse")
    with pytest.raises(ValueError, match=match):
        model.fit(X, y[:, :1], epochs=1, callbacks=[GradientLogger(per_example=True)], verbose=0)


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is data parallelism on JAX (TensorFlow has tf.distribute, torch is not supported by it here)")
def test_a_keras_distribution_is_refused_by_name():
    X, y = data(8, 4, "mse")
    model = mlp("mse")
    model.compile("sgd", "mse")
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        with pytest.raises(ValueError, match="GradientLogger\\(per_example=True\\) does not support keras.distribution yet. Received: DataParallel in effect"):
            model.fit(X, y, epochs=1, callbacks=[GradientLogger(per_example=True)], verbose=0)
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.skipif(BACKEND != "jax", reason="only JAX holds the norms in fixed-width rows (torch and TensorFlow grow theirs)")
def test_a_batch_too_wide_for_the_norms_is_refused_after_its_step_and_the_model_trains_on():
    # Refused after the step that was traced with it, not while tracing (which would leave the
    # model's variables unusable); that step's norms are NaN, its statistics exact.
    from kerasbp.logger.per_example_jax import MAX_BATCH

    X, y = data(MAX_BATCH + 4, 4, "mse", seed=1)
    model = mlp("mse")
    model.compile(keras.optimizers.SGD(0.05), "mse")
    logger = GradientLogger(per_example=True)
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH} examples. Received a batch of {MAX_BATCH + 4}. Use a smaller batch_size"):
        model.fit(X, y, epochs=2, batch_size=MAX_BATCH + 4, verbose=0, callbacks=[logger])
    logger.detach()
    assert logger.steps.tolist() == [0] and np.isnan(logger.per_example_norms()).all() and np.isfinite(logger.noise["norm_test"]).all()
    model.fit(X, y, epochs=1, batch_size=1024, verbose=0)  # the model trains on, with a new logger too
    again = GradientLogger(per_example=True)
    model.fit(X[:2048], y[:2048], epochs=1, batch_size=1024, shuffle=False, verbose=0, callbacks=[again])
    assert again.per_example_norms().shape == (2, 1024) and np.isfinite(again.per_example_norms()).all()
