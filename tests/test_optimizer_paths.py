"""GradientLogger on every Keras optimizer path: loss scaling, clipping, accumulation, schedules.

The LIN fixture: `linear_model(2)` with kernel `[[0.5], [-0.5]]`, bias `[0.1]`,
`X = [[1, 2], [3, 4], [5, 6], [7, 8]]`, `y = [[10], [20], [30], [40]]`, MSE, one batch of 4.
By hand: predictions `[-0.4, -0.4, -0.4, -0.4]`, residuals `r = yhat - y = [-10.4, -20.4, -30.4, -40.4]`,
loss `mean(r^2) = 770.16`, `dL/dyhat = 2 r / 4 = r / 2`, so `dL/dkernel = X^T r / 2 = [-253.2, -304.0]`
and `dL/dbias = sum(r) / 2 = -50.8`.
"""

import itertools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbp import linear_model
from kerasbp.logger import GradientLogger

LIN_X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], "float32")
LIN_Y = np.array([[10], [20], [30], [40]], "float32")
LIN_KERNEL_GRAD = [-253.2, -304.0]
LIN_BIAS_GRAD = -50.8


def lin_model(optimizer, kernel=((0.5,), (-0.5,)), bias=(0.1,)):
    model = linear_model(2)
    model.set_weights([np.array(kernel, "float32"), np.array(bias, "float32")])
    model.compile(optimizer, "mse")
    return model


@pytest.fixture
def mixed_float16():
    """Run a test under the mixed_float16 dtype policy; build models inside the test."""
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(keras.config.floatx())


# ------------------------------------------------------------------ the LIN cases of issue 12


@pytest.mark.parametrize(
    "make, scale",
    [
        (lambda: keras.optimizers.SGD(1e-3), 1.0),
        (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1e-3)), 2.0**15),
        (lambda: keras.optimizers.SGD(1e-3, loss_scale_factor=128), 128.0),
    ],
    ids=["plain", "loss-scale-optimizer", "loss-scale-factor"],
)
def test_lin_loss_gradient_is_unscaled_and_the_update_is_seen(make, scale):
    model = lin_model(make())
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    kernel, bias = logger.gradients()
    np.testing.assert_allclose(kernel[0, :, 0], LIN_KERNEL_GRAD, rtol=1e-6)  # float32 of the hand values
    np.testing.assert_allclose(bias[0], [LIN_BIAS_GRAD], rtol=1e-6)
    assert logger.losses[0] == pytest.approx(770.16, rel=1e-6)
    for logged, applied in zip(logger.gradients(), logger.applied_gradients(), strict=True):
        np.testing.assert_array_equal(logged, applied)  # no clipping: the update rule got the same
    assert logger.applied.tolist() == [True] and logger.learning_rates.tolist() == [pytest.approx(1e-3)]
    assert logger.loss_scales.tolist() == [scale]
    assert logger.global_norms[0] == pytest.approx(np.sqrt(253.2**2 + 304.0**2 + 50.8**2), rel=1e-6)
    # the weights moved by lr * g: update_ratio = lr |g| / |w|
    ratio = logger.stats[logger.names[1]]["update_ratio"][0]
    assert ratio == pytest.approx(1e-3 * 50.8 / 0.1, rel=1e-5)
    np.testing.assert_allclose(model.get_weights()[1], [0.1 + 1e-3 * 50.8], rtol=1e-6)
    assert not logger.health().exploding, str(logger.health())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lin_gradient_accumulation_logs_every_micro_step(optimizer):
    # Batch 2: MSE over 2 samples gives dL/dyhat = 2 r / 2 = r, so dL/dbias = sum(r): -30.8 on
    # rows 0-1 (r = [-10.4, -20.4]), -70.8 on rows 2-3. The update uses their mean, -50.8, the
    # full-batch gradient: bias 0.1 + 1e-3 * 50.8 = 0.1508 with SGD.
    make = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer]
    model = lin_model(make(1e-3, gradient_accumulation_steps=2))
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=2, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == [0, 1]
    assert logger.applied.tolist() == [False, True]
    assert logger.iterations.tolist() == [0, 1]  # Keras's iterations count applied updates here
    np.testing.assert_allclose(logger.gradients()[1][:, 0], [-30.8, -70.8], rtol=1e-6)
    applied_kernel, applied_bias = logger.applied_gradients()
    assert np.isnan(applied_bias[0]).all() and np.isnan(logger.learning_rates[0])
    np.testing.assert_allclose(applied_bias[1], [LIN_BIAS_GRAD], rtol=1e-6)
    np.testing.assert_allclose(applied_kernel[1, :, 0], LIN_KERNEL_GRAD, rtol=1e-6)
    assert logger.learning_rates[1] == pytest.approx(1e-3)
    ratios = logger.stat("update_ratio")
    assert ratios[0].tolist() == [0.0, 0.0] and (ratios[1] > 0).all()
    np.testing.assert_allclose(logger.stat("applied_norm")[1], [np.hypot(253.2, 304.0), 50.8], rtol=1e-6)
    if optimizer == "sgd":
        np.testing.assert_allclose(model.get_weights()[1], [0.1508], rtol=1e-6)
    else:  # Adam's first step moves each weight by lr (m_hat / sqrt(v_hat) = sign(g))
        np.testing.assert_allclose(model.get_weights()[1], [0.101], rtol=1e-5)


def test_lin_clipnorm_from_zero_weights():
    # From zero weights r = -y, so dL/dkernel = -X^T y / 2 = -[500, 600] / 2 = [-250, -300] and
    # dL/dbias = -sum(y) / 2 = -50; |dL/dkernel| = 390.5, clipped to norm 1: [-0.640, -0.768].
    model = lin_model(keras.optimizers.SGD(0.1, clipnorm=1), kernel=((0,), (0,)), bias=(0,))
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    np.testing.assert_allclose(logger.gradients()[0][0, :, 0], [-250.0, -300.0], rtol=1e-6)
    np.testing.assert_allclose(logger.applied_gradients()[0][0, :, 0], np.array([-250.0, -300.0]) / np.hypot(250, 300), rtol=1e-6)
    np.testing.assert_allclose(logger.applied_gradients()[0][0, :, 0], [-0.640, -0.768], atol=5e-4)
    assert logger.clipped.tolist() == [True]
    assert logger.clipping == {"clipnorm": 1.0, "global_clipnorm": None, "clipvalue": None}  # the threshold, for plots
    np.testing.assert_allclose(logger.stat("applied_norm")[0], [1.0, 1.0], rtol=1e-6)  # each tensor clipped to norm 1
    assert logger.global_norms[0] == pytest.approx(np.sqrt(250**2 + 300**2 + 50**2), rel=1e-6)
    np.testing.assert_allclose(model.get_weights()[0][:, 0], 0.1 * np.array([250.0, 300.0]) / np.hypot(250, 300), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, clipped",
    [
        ({"clipvalue": 100.0}, True),  # the largest |entry| is 304
        ({"clipvalue": 400.0}, False),
        ({"global_clipnorm": 300.0}, True),  # global norm sqrt(253.2^2 + 304^2 + 50.8^2) = 398.9
        ({"global_clipnorm": 500.0}, False),
        ({"clipnorm": 1000.0}, False),
    ],
    ids=["clipvalue-acts", "clipvalue-idle", "global-acts", "global-idle", "clipnorm-idle"],
)
def test_lin_clipping_flag(kwargs, clipped):
    model = lin_model(keras.optimizers.SGD(1e-3, **kwargs))
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    assert logger.clipped.tolist() == [clipped]
    applied = np.concatenate([g[0].ravel() for g in logger.applied_gradients()])
    logged = np.concatenate([g[0].ravel() for g in logger.gradients()])
    if clipped:
        assert not np.allclose(applied, logged)
    else:
        np.testing.assert_allclose(applied, logged, rtol=1e-6)


def test_learning_rate_schedule_is_logged_per_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)
    model = lin_model(keras.optimizers.SGD(schedule))
    logger = GradientLogger()
    model.fit(LIN_X, LIN_Y, batch_size=1, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
    np.testing.assert_allclose(logger.learning_rates, 0.01 * 0.5 ** np.arange(8), rtol=1e-6)
    assert logger.iterations.tolist() == list(range(1, 9))


def test_learning_rate_schedule_under_accumulation_uses_kerass_raw_iterations():
    # Keras evaluates the schedule at its raw iteration count (micro-steps included).
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)
    model = lin_model(keras.optimizers.SGD(schedule, gradient_accumulation_steps=2))
    logger = GradientLogger()
    model.fit(LIN_X, LIN_Y, batch_size=1, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.applied.tolist() == [False, True, False, True]
    np.testing.assert_allclose(logger.learning_rates[[1, 3]], [0.01 * 0.5, 0.01 * 0.5**3], rtol=1e-6)


class ComputeLossStep(keras.Model):
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x, y, self(x, training=True))
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return {"loss": loss}


class OwnLossStep(keras.Model):
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return {"loss": loss}


@pytest.mark.parametrize("step", [ComputeLossStep, OwnLossStep], ids=["compute-loss", "own-loss"])
def test_custom_train_step_losses(step):
    inputs = keras.Input((2,))
    model = step(inputs, keras.layers.Dense(1, kernel_initializer="zeros")(inputs))
    model.compile(keras.optimizers.SGD(1e-4), "mse")
    logger = GradientLogger(record="full")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(LIN_X, LIN_Y, batch_size=2, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
    about_loss = [w for w in caught if "computed its loss neither" in str(w.message)]
    np.testing.assert_allclose(logger.gradients()[1][0], [-30.0], rtol=1e-6)  # exact either way: zero weights, -sum(y[:2])
    if step is ComputeLossStep:
        assert logger.losses[0] == pytest.approx((10**2 + 20**2) / 2)
        assert np.isfinite(logger.losses).all() and not about_loss
    else:
        assert np.isnan(logger.losses).all()
        assert len(about_loss) == 1  # one warning, not one per step


def test_multi_optimizer_is_refused_by_name():
    model = linear_model(2)
    model.compile(keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.SGD())), "mse")
    with pytest.raises(ValueError, match="does not support keras.optimizers.MultiOptimizer"):
        model.fit(LIN_X, LIN_Y, epochs=1, callbacks=[GradientLogger()], verbose=0)


# ------------------------------------------------------------------- loss-scale overflow skips


def _overflowing_mixed_model():
    # Targets in the tens: at the initial scale 2**15 the scaled output gradient
    # 2**15 * 2 (yhat - y) / n overflows float16 (max 65504), so LossScaleOptimizer skips and
    # halves the scale until the gradient fits.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # Keras wrapped it itself
    return model


@pytest.mark.usefixtures("mixed_float16")
def test_mixed_float16_overflow_skips_are_rows_counted_not_errors():
    model = _overflowing_mixed_model()
    logger = GradientLogger(on_nonfinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no non-finite warning either
        model.fit(LIN_X, LIN_Y, batch_size=2, epochs=6, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == list(range(12))  # one row per train step, skips included
    skipped = logger.skipped
    assert 0 < skipped.sum() < 12 and not (skipped & logger.applied).any()
    assert (logger.applied | skipped).all()
    # each skip halves the scale, each applied step keeps it (dynamic_growth_steps is 2000)
    scales = logger.loss_scales
    np.testing.assert_array_equal(scales[1:], np.where(skipped[:-1], scales[:-1] / 2, scales[:-1]))
    # optimizer.iterations moves only on applied steps
    np.testing.assert_array_equal(logger.iterations, np.cumsum(logger.applied))
    health = logger.health()
    assert health.skipped == skipped.sum() and not health.nonfinite and not health.exploding
    assert f"{skipped.sum()} steps skipped by loss scaling" in str(health)


def test_a_nonfinite_gradient_that_is_applied_is_still_reported():
    # Without loss scaling a NaN gradient is applied: that one is reported.
    inputs = keras.Input((1,))
    outputs = keras.layers.Lambda(lambda t: tf.sqrt(t))(keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    logger = GradientLogger()
    with pytest.warns(RuntimeWarning, match="non-finite gradient at step 0"):
        model.fit(np.ones((4, 1), "float32"), np.ones((4, 1), "float32"), batch_size=4, epochs=2, callbacks=[logger], verbose=0)
    health = logger.health()
    assert health.nonfinite and not health.exploding  # d sqrt(z)/dz at z = 0 is inf: NaN, not "exploding"
    assert "EXPLODING" not in str(health) and "NON-FINITE - first at step 0" in str(health)


# ---------------------------------------------------------------------- false flags of health


def test_relu_units_zeroed_by_dropout_are_not_dead():
    # Batch 1, three steps: about one unit in eight is dropped at all three.
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(3, 3))).astype("float32")
    y = X.sum(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(32, activation="relu", kernel_initializer="ones"),  # every unit fires on positive inputs
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(1e-4), "mse")
    logger = GradientLogger(record="full")
    model.fit(X, y, batch_size=1, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    kernel_grads = logger.gradients()[0]  # (3, 3, 32)
    dropped_always = np.flatnonzero((kernel_grads == 0).all(axis=(0, 1)))
    assert len(dropped_always) > 0  # some units had no gradient at any step: dropout zeroed them
    assert logger.health().dead_units == {}, str(logger.health())


def test_truly_dead_units_are_still_found_behind_dropout():
    X = np.abs(np.random.default_rng(0).normal(size=(16, 3))).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    kernel, bias, k2, b2 = model.get_weights()
    kernel[:] = 1.0
    kernel[:, 2] = -1.0  # positive inputs: unit 2 never fires, the others always do
    model.set_weights([kernel, np.zeros_like(bias), k2, b2])
    model.compile(keras.optimizers.SGD(1e-4), "mse")
    logger = GradientLogger()
    model.fit(X, X[:, :1], batch_size=4, epochs=2, callbacks=[logger], verbose=0)
    assert logger.health().dead_units == {logger.names[0]: [2]}


def test_adam_on_an_unscaled_regression_target_is_not_exploding():
    # Targets in the hundreds: gradient norms in the thousands from the start, falling as Adam
    # fits. An absolute threshold of 1e3 called this EXPLODING; relative to the run it is not.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype("float32")
    y = (X @ np.array([[120.0], [-80.0], [200.0]]) + 300).astype("float32")
    model = linear_model(3, seed=0)
    model.compile(keras.optimizers.Adam(5.0), "mse")
    logger = GradientLogger()
    history = model.fit(X, y, batch_size=16, epochs=30, callbacks=[logger], verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 1000  # a healthy run
    assert logger.global_norms.max() > 1e3
    health = logger.health()
    assert not health.exploding and health.ok, str(health)
    assert "exploding: no - global gradient norm peaked at" in str(health)


def test_a_diverging_run_is_exploding_with_its_figures():
    X = np.linspace(0, 3, 30, dtype="float32")[:, None]
    model = linear_model(1, seed=0)
    model.compile(keras.optimizers.SGD(1.5), "mse")  # beyond 2 / lambda_max: the error grows each step
    logger = GradientLogger()
    model.fit(X, 2 * X + 1, batch_size=30, epochs=12, callbacks=[logger], verbose=0)
    health = logger.health()
    assert health.exploding and not health.nonfinite, str(health)
    assert health.figures["growth"] > 100
    assert "EXPLODING - global gradient norm peaked at" in str(health)
    assert logger.health(exploding_growth=1e30).exploding is False


# --------------------------------------------------------------------- counting train steps


def test_steps_continue_across_fits_with_skips_and_micro_steps():
    model = lin_model(keras.optimizers.SGD(1e-4, gradient_accumulation_steps=2))
    logger = GradientLogger(every_n_steps=3)
    for _ in range(2):
        model.fit(LIN_X, LIN_Y, batch_size=1, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == [0, 3, 6]  # train steps, micro-steps included
    assert logger.iterations.tolist() == [0, 2, 3]  # Keras: applied updates
    assert logger.epochs.tolist() == [0, 0, 0]


def _scaled_accumulating_run(**logger_kwargs):
    # mixed_float16: the scaled gradients overflow float16 at first (skips), then fit.
    keras.utils.set_random_seed(3)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    finally:
        keras.config.set_dtype_policy(keras.config.floatx())
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1e-3, clipnorm=5.0, gradient_accumulation_steps=2))
    run_eagerly = logger_kwargs.pop("run_eagerly", False)
    model.compile(optimizer, "mse", run_eagerly=run_eagerly)
    logger = GradientLogger(record="full", **logger_kwargs)
    model.fit(LIN_X, LIN_Y, batch_size=1, epochs=3, shuffle=False, callbacks=[logger], verbose=0)
    return logger


@pytest.mark.parametrize("variant", [{"every_n_steps": 3}, {"run_eagerly": True}], ids=["every-3", "eager"])
def test_loss_scaling_with_accumulation_logs_the_same_rows_every_n_and_eagerly(variant):
    # The update rule runs inside tf.cond branches here (the scale's finiteness check, then the
    # accumulation step): its values reach the row through variables. Logging every third step,
    # or running eagerly (no branch graphs), must give the same rows as every step in a graph.
    every = _scaled_accumulating_run()
    other = _scaled_accumulating_run(**dict(variant))
    assert every.skipped.any() and every.applied.any() and (~every.applied & ~every.skipped).any()
    rows = np.isin(every.steps, other.steps)
    assert other.steps.tolist() == every.steps[rows].tolist()
    # Eagerly TensorFlow may run other float16 kernels than in a graph: on a 2026-12 Xeon, Keras's
    # own running loss (no logger) parted between the two at one step of this run, where the
    # logged loss differed by 2.4e-5 and the gradients by up to one float16 ulp (2**-10) of their
    # largest entry.
    # So eagerly the rows agree to float16 precision; in a graph every third step, exactly.
    eager = "run_eagerly" in variant
    for name in ("iterations", "applied", "skipped", "clipped", "loss_scales", "learning_rates", "losses"):
        np.testing.assert_allclose(getattr(other, name), getattr(every, name)[rows], rtol=1e-4 if eager and name == "losses" else 1e-6, err_msg=name)
    for a, b in zip(other.applied_gradients() + other.gradients(), every.applied_gradients() + every.gradients(), strict=True):
        if eager:
            np.testing.assert_allclose(a, b[rows], rtol=0, atol=2**-8 * np.nanmax(np.abs(b[rows][np.isfinite(b[rows])])))
        else:
            np.testing.assert_allclose(a, b[rows], rtol=1e-5)


# --------------------------------------------------------------------------- the test matrix

OPTIMIZERS = {
    "sgd": lambda **kw: keras.optimizers.SGD(0.05, **kw),
    "sgd-momentum": lambda **kw: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, **kw),
    "adam": lambda **kw: keras.optimizers.Adam(0.01, **kw),
    "adamw": lambda **kw: keras.optimizers.AdamW(0.01, weight_decay=0.1, **kw),
    "rmsprop-centered": lambda **kw: keras.optimizers.RMSprop(0.01, centered=True, momentum=0.5, **kw),
    "nadam": lambda **kw: keras.optimizers.Nadam(0.01, **kw),
}
CLIPPING = {"none": {}, "clipnorm": {"clipnorm": 0.5}, "clipvalue": {"clipvalue": 0.2}, "global_clipnorm": {"global_clipnorm": 0.5}}
SCALING = ("none", "loss-scale-optimizer", "mixed_float16")
ACCUMULATION = (None, 3)
STEPS_PER_EXECUTION = (1, 3)

#: Combinations of the axes that Keras 3.15 refuses: none (every one trains).
REFUSED = {}

#: One row per default-tier case: every value of every axis at least once.
DEFAULT_TIER = [
    ("sgd", "none", "none", None, 1),
    ("sgd-momentum", "clipnorm", "loss-scale-optimizer", 3, 3),
    ("adam", "clipvalue", "mixed_float16", None, 3),
    ("adamw", "global_clipnorm", "none", 3, 1),
    ("rmsprop-centered", "clipnorm", "mixed_float16", 3, 1),
    ("nadam", "global_clipnorm", "loss-scale-optimizer", None, 3),
]


def _case_id(case):
    optimizer, clipping, scaling, accumulation, spe = case
    return f"{optimizer}-{clipping}-{scaling}-acc{accumulation or 1}-spe{spe}"


def _matrix():
    cases = []
    for case in itertools.product(OPTIMIZERS, CLIPPING, SCALING, ACCUMULATION, STEPS_PER_EXECUTION):
        marks = [] if case in DEFAULT_TIER else [pytest.mark.slow]
        cases.append(pytest.param(*case, marks=marks, id=_case_id(case)))
    return cases


def _record_batches(model, capacity, batch_size, n_in, n_out):
    """Wrap `model.train_step` so that every batch it trains on is kept: returns a function giving
    the list of `(x, y)` NumPy batches in the order trained."""
    xs = tf.Variable(tf.zeros((capacity, batch_size, n_in)))
    ys = tf.Variable(tf.zeros((capacity, batch_size, n_out)))
    sizes = tf.Variable(tf.zeros((capacity,), tf.int32))
    count = tf.Variable(0)
    original = model.train_step

    def train_step(data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        n = tf.shape(x)[0]
        i = count.assign_add(1) - 1
        xs.scatter_nd_update([[i]], tf.pad(tf.cast(x, tf.float32), [[0, batch_size - n], [0, 0]])[None])
        ys.scatter_nd_update([[i]], tf.pad(tf.cast(y, tf.float32), [[0, batch_size - n], [0, 0]])[None])
        sizes.scatter_nd_update([[i]], n[None])
        return original(data)

    model.train_step = train_step
    return lambda: [(xs[i, : sizes[i]].numpy(), ys[i, : sizes[i]].numpy()) for i in range(int(count.numpy()))]


def _snapshot(optimizer):
    from kerasbp.logger.capture import snapshot_variables

    return snapshot_variables(optimizer)


def _replay(model, leaf, snapshot, state_row, weights_row, grads, lr, iterations_before):
    """Keras's own update rule for one step: a fresh optimizer of the leaf's class and settings
    without clipping, accumulation or loss scaling, its state set from the snapshot, the
    learning rate set to the logged one, applied to the logged applied gradients at the logged
    weights. Returns the weights after."""
    from kerasbp.logger.capture import snapshot_variables

    config = leaf.get_config()
    for key in ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps", "loss_scale_factor"):
        config[key] = None
    config["learning_rate"] = float(lr)
    replay = type(leaf).from_config(config)
    model.set_weights(weights_row)
    replay.build(model.trainable_variables)
    # The same variables in the same order, less the accumulators (created first, in build) and
    # the learning rate (set above): map them by position, since unnamed ones (Nadam's
    # u_product) get a new automatic name in every optimizer.
    position = {id(v): i for i, v in enumerate(snapshot)}
    kept = [v for v in snapshot_variables(leaf) if "gradient_accumulator" not in v.name and v.name != "learning_rate"]
    for v, source in zip((v for v in replay.variables if v.name != "learning_rate"), kept, strict=True):
        v.assign(iterations_before if v.name == "iteration" else state_row[position[id(source)]])
    replay.apply([tf.constant(g) for g in grads], model.trainable_variables)
    return model.get_weights()


@pytest.mark.parametrize("optimizer, clipping, scaling, accumulation, steps_per_execution", _matrix())
def test_matrix_logged_gradients_applied_updates_and_replay(optimizer, clipping, scaling, accumulation, steps_per_execution):
    """On each combination, with shuffle=True and a partial last batch (11 samples, batch 4):

    1. the logged loss gradient equals a GradientTape gradient at the logged weights (under
       float16 the tape of the loss times the logged scale, divided by it); norm-wise relative
       error <= 1e-5 in float32, <= 2e-3 under mixed_float16 (float16 forward pass);
    2. `applied` marks exactly the updates Keras made: the weights change at those steps and only
       there, and `iterations` moves by one at each of them;
    3. replaying Keras's update rule from the logged state, applied gradient and learning rate
       reproduces the weights after every applied step to 4 float32 ulps of the largest weight
       (graph vs eager execution of the same float32 formula).
    """
    case = (optimizer, clipping, scaling, accumulation, steps_per_execution)
    if case in REFUSED:
        pytest.skip(REFUSED[case])
    if scaling == "mixed_float16":
        keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(1)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(11, 2)).astype("float32")
        y = (np.sin(X[:, :1]) + 0.5 * X[:, 1:]).astype("float32")
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
        inner = OPTIMIZERS[optimizer](**CLIPPING[clipping], gradient_accumulation_steps=accumulation)
        outer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**10) if scaling == "loss-scale-optimizer" else inner
        model.compile(outer, "mse", steps_per_execution=steps_per_execution)
        batches = _record_batches(model, capacity=16, batch_size=4, n_in=2, n_out=1)
        logger = GradientLogger(record="full", snapshots=True)
        model.fit(X, y, batch_size=4, epochs=2, shuffle=True, callbacks=[logger], verbose=0)
        final = model.get_weights()
        seen = batches()
        assert len(seen) == 6 and sorted(len(x) for x, _ in seen) == [3, 3, 4, 4, 4, 4]
        assert logger.steps.tolist() == list(range(6))
        leaf = model.optimizer.inner_optimizer if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) else model.optimizer
        assert (scaling != "none") == isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        weights, state, grads, applied_grads = logger.weights(), logger.optimizer_state(), logger.gradients(), logger.applied_gradients()
        applied = logger.applied
        float16 = scaling == "mixed_float16"

        # 1. the loss gradient, against a tape at the logged weights
        rtol = 2e-3 if float16 else 1e-5
        for k, (xb, yb) in enumerate(seen):
            if logger.skipped[k]:
                continue
            model.set_weights([w[k] for w in weights])
            with tf.GradientTape() as tape:
                loss = model.compute_loss(xb, yb, model(xb, training=True))
                scaled = loss * logger.loss_scales[k]
            expected = [g.numpy() / logger.loss_scales[k] for g in tape.gradient(scaled, model.trainable_weights)]
            assert logger.losses[k] == pytest.approx(float(loss), rel=rtol)
            for got, want in zip((g[k] for g in grads), expected, strict=True):
                assert np.linalg.norm(got - want) <= rtol * np.linalg.norm(want), (k, got, want)

        # 2. applied marks exactly the updates Keras made
        after = [[w[k + 1] for w in weights] for k in range(5)] + [final]
        moved = [any(not np.array_equal(a, w[k]) for a, w in zip(after[k], weights, strict=True)) for k in range(6)]
        assert applied.tolist() == moved
        np.testing.assert_array_equal(np.diff(np.concatenate([[0], logger.iterations])), applied.astype(int))
        if accumulation:
            assert not applied.all()
        if not logger.skipped.any():
            expected_applied = [(k + 1) % accumulation == 0 for k in range(6)] if accumulation else [True] * 6
            assert applied.tolist() == expected_applied
        assert (np.isnan(logger.learning_rates) == ~applied).all()

        # 3. replay Keras's update from the logged applied gradient and learning rate
        for k in np.flatnonzero(applied):
            got = _replay(
                model, leaf, _snapshot(model.optimizer), [s[k] for s in state], [w[k] for w in weights],
                [g[k] for g in applied_grads], logger.learning_rates[k], logger.iterations[k] - 1,
            )
            for g, want in zip(got, after[k], strict=True):
                tolerance = 4 * np.spacing(np.float32(np.abs(want).max()))
                np.testing.assert_allclose(g, want, rtol=0, atol=tolerance, err_msg=f"step {k}")
        if clipping == "none":
            assert not logger.clipped.any()
        for k in np.flatnonzero(applied):
            np.testing.assert_allclose(
                logger.stat("applied_norm")[k], [np.linalg.norm(g[k]) for g in applied_grads], rtol=1e-5
            )
    finally:
        keras.config.set_dtype_policy(keras.config.floatx())
