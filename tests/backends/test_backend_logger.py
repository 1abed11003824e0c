"""GradientLogger inside `model.fit` on the JAX and torch backends: the same API and the same numbers as on TensorFlow.

Run with `KERAS_BACKEND=jax python -m pytest tests/backends` (or `KERAS_BACKEND=torch`); skipped
under TensorFlow, whose tests are tests/test_logger.py and tests/test_optimizer_paths.py.
"""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from kerasbp import compile_model, dense_model, linear_model, xor_data, xor_model
from kerasbp.logger import STATS, GradientLogger, load_gradient_log

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: logger_checks
import logger_checks  # noqa: E402

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "torch"), reason="JAX and torch backend tests: run with KERAS_BACKEND=jax or torch")
#: steps_per_execution > 1 is refused by Keras on torch.
MULTI_STEP = 3 if BACKEND == "jax" else 1

LIN_X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], "float32")
LIN_Y = np.array([[10], [20], [30], [40]], "float32")
LIN_KERNEL_GRAD = [-253.2, -304.0]  # by hand: tests/test_optimizer_paths.py
LIN_BIAS_GRAD = -50.8


def regression_data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype("float32")
    y = (X @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return X, y


def lin_model(optimizer, kernel=((0.5,), (-0.5,)), bias=(0.1,)):
    model = linear_model(2)
    model.set_weights([np.array(kernel, "float32"), np.array(bias, "float32")])
    model.compile(optimizer, "mse")
    return model


def record_batches(model):
    """Wrap `model.train_step` so that each step's `(x, y)` reaches the host, in order: the batches
    that `shuffle=True` made. Returns the list they are appended to."""
    batches = []
    original = model.train_step
    if BACKEND == "jax":
        import jax

        def step(state, data):
            x, y = data[0], data[1]
            jax.debug.callback(lambda x, y: batches.append((np.array(x), np.array(y))), x, y, ordered=True)
            return original(state, data)

    else:

        def step(data):
            batches.append(tuple(keras.ops.convert_to_numpy(a).copy() for a in data[:2]))
            return original(data)

    object.__setattr__(model, "train_step", step)
    return batches


def keras_gradient_function(model):
    """Keras's own loss and gradient at given weights on a batch, from the model's stateless call
    and loss (jitted on JAX, as fit's step is): `f(weights, x, y) -> (loss, grads)`."""
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]

    def loss(trainable, x, y):
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        value, _ = model.stateless_compute_loss(trainable, non_trainable, metrics, x=x, y=y, y_pred=y_pred, training=False)
        return value

    if BACKEND == "jax":
        import jax

        return jax.jit(jax.value_and_grad(loss))
    import torch

    def value_and_grad(weights, x, y):
        trainable = [torch.tensor(np.asarray(w), requires_grad=True) for w in weights]
        value = loss(trainable, torch.as_tensor(x), torch.as_tensor(y))
        grads = torch.autograd.grad(value, trainable)
        return float(value.detach()), [g.numpy() for g in grads]

    return value_and_grad


def relative_errors(got, want):
    """Per variable, |got - want| over the norm of the whole of `want` (all variables): a variable
    whose gradient happens to be near zero (a bias of a well-fit output) is judged on the scale
    of the step's gradient."""
    scale = np.sqrt(sum(np.sum(np.asarray(w, np.float64) ** 2) for w in want))
    return [np.linalg.norm(np.asarray(g, np.float64) - np.asarray(w, np.float64)) / scale for g, w in zip(got, want, strict=True)]


def check_against_keras_and_twin(logger, model, batches, loss, keras_rtol, twin_rtol, loss_rtol):
    """At every logged step, on that step's batch and at the weights Keras had before it
    (snapshots): Keras's own gradient recomputed there equals the logged one within
    `keras_rtol` (the logger adds no error), and the NumPy twin's float64 gradient equals it
    within `twin_rtol` (Keras's arithmetic), its loss within `loss_rtol`.

    Returns:
        `(worst error against Keras, worst error against the twin)`.
    """
    from kerasbp.reference import NumpyMLP

    twin = NumpyMLP.from_keras(model).astype("float64")
    recompute = keras_gradient_function(model)
    grads, weights = logger.gradients(), logger.weights()
    assert len(batches) == len(logger.steps)
    worst_keras = worst_twin = 0.0
    for k, (xb, yb) in enumerate(batches):
        logged = [g[k] for g in grads]
        assert all(g.dtype == v.dtype for g, v in zip(logged, model.trainable_weights, strict=True))
        value, own = recompute([w[k] for w in weights], xb, yb)
        assert logger.losses[k] == pytest.approx(float(value), rel=keras_rtol)
        errors = relative_errors(logged, own)
        worst_keras = max(worst_keras, *errors)
        assert max(errors) <= keras_rtol, (k, errors)
        twin.set_params([w[k].astype("float64") for w in weights])
        value, exact = twin.gradients(xb.astype("float64"), yb.astype("float64"), loss)
        assert logger.losses[k] == pytest.approx(float(value), rel=loss_rtol)
        errors = relative_errors(logged, exact)
        worst_twin = max(worst_twin, *errors)
        assert max(errors) <= twin_rtol, (k, errors)
    return worst_keras, worst_twin


TWIN_CASES = [(task, optimizer, "float64", 1) for task in ("xor", "linear") for optimizer in ("sgd", "adam", "rmsprop")] + [
    ("xor", "adam", "float32", 1),
    ("linear", "sgd", "float32", 1),
]
if MULTI_STEP > 1:
    TWIN_CASES += [("xor", "adam", "float64", MULTI_STEP), ("linear", "rmsprop", "float32", MULTI_STEP)]


@pytest.mark.parametrize("task, optimizer, dtype, steps_per_execution", TWIN_CASES, ids=["-".join(map(str, c)) for c in TWIN_CASES])
def test_logged_gradients_equal_the_twins_at_kerass_weights(task, optimizer, dtype, steps_per_execution, request):
    # shuffle=True, and a partial last batch (XOR repeated 3 times: 12 samples in batches of 8;
    # linear: 37 in batches of 8). Errors of the logged gradient, relative to the step's gradient norm:
    # - against Keras's own gradient recomputed at the logged weights (on JAX jitted, as fit's step):
    #   float64 1e-12, float32 1e-6 (measured: 0, bit for bit). The logger adds nothing.
    # - against the NumPy twin's float64 gradient: float32 1e-5 (Keras's own float32 rounding, as
    #   on TF); float64 1e-12 for the sigmoid XOR net. Keras 3.15 on JAX computes some float64
    #   ops in float32: `keras.backend.result_type` maps float64 to float32 on every backend but
    #   TensorFlow (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE), so `ops.tanh` and
    #   `ops.mean` of float64 tensors return float32. So the tanh net's float64 gradient is only
    #   float32-accurate (1e-5; measured up to 2e-6), a batch size that is no power of two puts
    #   float32(1/n) into every gradient (3e-8: hence XOR in batches of 8 and 4), and every float64
    #   loss, a float32 mean over the outputs, is within 1e-7 of the exact one (the tanh net's
    #   within 1e-5). XOR's sigmoid (`jax.nn.sigmoid`) stays float64.
    # - torch: float64 against the twin 1e-5 for both nets, as float32 (measured up to 1.1e-6:
    #   Keras on torch computes more of a float64 model in float32, the sigmoid net too); against
    #   Keras's own gradient, recomputed with torch.autograd, bit for bit.
    if dtype == "float64":
        request.getfixturevalue("float64")
    keras_rtol = 1e-6 if dtype == "float32" else 1e-12
    twin_rtol = 1e-12 if (BACKEND, dtype, task) == ("jax", "float64", "xor") else 1e-5
    loss_rtol = 1e-7 if (dtype, task) == ("float64", "xor") else 1e-5
    if task == "xor":
        X, y = (np.tile(a, (3, 1)) for a in xor_data(dtype))
        model, loss, batch = xor_model(seed=2), "binary_crossentropy", 8
    else:
        X, y = (a.astype(dtype) for a in regression_data())
        model, loss, batch = dense_model([2, 3, 1], ["tanh", "linear"], seed=2), "mse", 8
    compile_model(model, optimizer, learning_rate=0.05, loss=loss, steps_per_execution=steps_per_execution)
    batches = record_batches(model)
    logger = GradientLogger(record="full", snapshots=True)
    epochs = 4
    model.fit(X, y, epochs=epochs, batch_size=batch, shuffle=True, callbacks=[logger], verbose=0)
    per_epoch = -(-len(X) // batch)
    assert logger.steps.tolist() == list(range(epochs * per_epoch))
    assert logger.epochs.tolist() == [s // per_epoch for s in range(epochs * per_epoch)]
    assert sorted({len(xb) for xb, _ in batches}) == sorted({batch, len(X) % batch})  # the partial batch ran
    assert not all(np.array_equal(batches[0][0], b[0]) for b in batches[per_epoch::per_epoch])  # shuffled
    worst = check_against_keras_and_twin(logger, model, batches, loss, keras_rtol, twin_rtol, loss_rtol)
    print(f"worst relative error: against Keras {worst[0]:.2e}, against the twin {worst[1]:.2e}")
    # The last snapshot plus the logged step give the final weights: the applied update is seen.
    assert logger.iterations.tolist() == list(range(1, epochs * per_epoch + 1))
    assert logger.applied.all() and np.allclose(logger.learning_rates, 0.05)


def test_sgd_logged_gradient_is_the_applied_update():
    # w_after = w_before - lr * g, every step, with shuffle and steps_per_execution=3 (JAX).
    X, y = regression_data()
    lr = 0.05
    model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=lr, steps_per_execution=MULTI_STEP)
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=3, batch_size=5, shuffle=True, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == list(range(24))
    grads, weights = logger.gradients(), logger.weights()
    for j, final in enumerate(model.get_weights()):
        trajectory = np.concatenate([weights[j], final[None]])  # (25, *shape)
        applied = (trajectory[:-1] - trajectory[1:]) / np.float32(lr)
        tolerance = 2 * np.spacing(np.abs(trajectory[:-1]).max()) / lr  # float32 rounding of w - lr*g
        np.testing.assert_allclose(applied, grads[j], rtol=0, atol=tolerance)


def test_each_row_keeps_the_learning_rate_of_its_own_step():
    # A callback lowers the learning rate in place after epoch 0, and a schedule halves it every
    # 3 steps: each logged step has the rate its update used, not the latest one.
    X, y = regression_data(n=12)

    class Lower(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(0.01)

    constant = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=0.05)
    decayed = dense_model([2, 3, 1], ["tanh", "linear"], seed=0)
    decayed.compile(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5, staircase=True)), "mse")
    for model, callbacks, want in (
        (constant, [Lower()], [0.05] * 3 + [0.01] * 3),
        (decayed, [], [0.1 * 0.5 ** (s // 3) for s in range(6)]),
    ):
        logger = GradientLogger()
        model.fit(X, y, epochs=2, batch_size=4, shuffle=False, callbacks=[*callbacks, logger], verbose=0)
        np.testing.assert_allclose(logger.learning_rates, want, rtol=1e-6)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's 64-bit mode")
def test_float32_without_64_bit_mode_in_a_fresh_process():
    # Users on JAX run without JAX_ENABLE_X64: the rows are float32 there. The same twin check.
    code = (
        "import numpy as np, keras\n"
        "from kerasbp import compile_model, xor_data, xor_model\n"
        "from kerasbp.logger import GradientLogger\n"
        "from kerasbp.reference import NumpyMLP\n"
        "import jax; assert not jax.config.jax_enable_x64\n"
        "X, y = xor_data(); model = compile_model(xor_model(seed=2), 'adam', learning_rate=0.05, loss='binary_crossentropy')\n"
        "logger = GradientLogger(record='full', snapshots=True)\n"
        "model.fit(X, y, epochs=30, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)\n"
        "twin = NumpyMLP.from_keras(model).astype('float64'); worst = 0.0\n"
        "for k in range(30):\n"
        "    twin.set_params([w[k].astype('float64') for w in logger.weights()])\n"
        "    loss, want = twin.gradients(X.astype('float64'), y.astype('float64'), 'binary_crossentropy')\n"
        "    assert abs(logger.losses[k] - loss) <= 1e-5 * abs(loss)\n"
        "    worst = max([worst] + [np.linalg.norm(g[k] - w) / np.linalg.norm(w) for g, w in zip(logger.gradients(), want)])\n"
        "assert logger.steps.tolist() == list(range(30)) and worst <= 1e-5, worst\n"
        "print('worst', worst)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worst" in done.stdout


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
    np.testing.assert_allclose(kernel[0, :, 0], LIN_KERNEL_GRAD, rtol=1e-6)
    np.testing.assert_allclose(bias[0], [LIN_BIAS_GRAD], rtol=1e-6)
    assert logger.losses[0] == pytest.approx(770.16, rel=1e-6)
    assert logger.applied.tolist() == [True] and logger.learning_rates.tolist() == [pytest.approx(1e-3)]
    assert logger.loss_scales.tolist() == [scale]
    assert logger.global_norms[0] == pytest.approx(np.sqrt(253.2**2 + 304.0**2 + 50.8**2), rel=1e-6)
    ratio = logger.stats[logger.names[1]]["update_ratio"][0]  # lr |g| / |w|
    assert ratio == pytest.approx(1e-3 * 50.8 / 0.1, rel=1e-5)
    np.testing.assert_allclose(model.get_weights()[1], [0.1 + 1e-3 * 50.8], rtol=1e-6)


@pytest.fixture
def mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(keras.config.floatx())


@pytest.mark.usefixtures("mixed_float16")
def test_mixed_float16_logs_unscaled_gradients():
    # compile adds a LossScaleOptimizer (initial scale 2**15) under mixed_float16. Its JAX path
    # calls the inner optimizer's stateless_apply only: the logger hooks the innermost one.
    X, y = regression_data()
    model = compile_model(dense_model([2, 8, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=0.01)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=2, batch_size=8, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.loss_scales[0] == 2.0**15
    from kerasbp.reference import NumpyMLP

    keras.config.set_dtype_policy("float32")
    twin = NumpyMLP.from_keras(dense_model([2, 8, 1], ["tanh", "linear"], seed=0)).astype("float64")
    grads, weights = logger.gradients(), logger.weights()
    applied_rows = np.flatnonzero(logger.applied)
    assert len(applied_rows) >= 5
    for k in applied_rows:
        start = 8 * (int(logger.steps[k]) % 5)
        twin.set_params([w[k].astype("float64") for w in weights])
        _, want = twin.gradients(X[start : start + 8].astype("float64"), y[start : start + 8].astype("float64"), "mse")
        for got, exact in zip((g[k] for g in grads), want, strict=True):
            # float16 compute: about 1e-3 relative; a scaled gradient would be 32768x off
            assert np.linalg.norm(got - exact) <= 1e-2 * np.linalg.norm(exact)


def test_saved_model_after_a_logged_fit_is_the_same_as_after_a_plain_fit(tmp_path):
    X, y = regression_data()
    predictions, structures = [], []
    for logged in (False, True):
        model = compile_model(dense_model([2, 3, 1], ["relu", "linear"], seed=0), "adam", learning_rate=0.01)
        callbacks = [GradientLogger(record="full", snapshots=True)] if logged else []
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False, callbacks=callbacks, verbose=0)
        path = tmp_path / f"model_{logged}.keras"
        model.save(path)
        back = keras.models.load_model(path)
        predictions.append(back.predict(X, verbose=0))
        np.testing.assert_array_equal(back.predict(X, verbose=0), model.predict(X, verbose=0))
        structures.append([(v.path.split("/")[-1].split("_")[-1], tuple(v.shape)) for v in back.optimizer.variables])
        for a, b in zip(back.optimizer.variables, model.optimizer.variables, strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(*predictions)
    assert structures[0] == structures[1]
    assert len(structures[1]) == 10  # iterations, learning rate, 2 moments of 4 variables: no buffer left


def test_the_model_trains_on_without_the_logger_afterwards():
    X, y = regression_data()
    model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd")
    logger = GradientLogger()
    model.fit(X, y, epochs=1, batch_size=8, callbacks=[logger], verbose=0)
    n_vars = len(model.optimizer.variables)
    for name in ("train_step", "_update_metrics_variables"):
        assert name not in model.__dict__
    assert "stateless_apply" not in model.optimizer.__dict__
    model.fit(X, y, epochs=1, batch_size=8, callbacks=[], verbose=0)
    assert len(model.optimizer.variables) == n_vars
    assert len(logger.steps) == 5  # the unlogged fit wrote nothing


def test_every_n_steps_and_counting_across_fits():
    X, y = regression_data()
    model = compile_model(linear_model(2, seed=0), "sgd")
    logger = GradientLogger(every_n_steps=3)
    model.fit(X, y, epochs=2, batch_size=10, callbacks=[logger], verbose=0)  # 8 steps: 0, 3, 6
    model.fit(X, y, epochs=1, batch_size=10, callbacks=[logger], verbose=0)  # steps 8..11: 9
    assert logger.steps.tolist() == [0, 3, 6, 9]
    assert logger.epochs.tolist() == [0, 0, 1, 0]
    assert logger.stats_array().shape == (4, 2, len(STATS))


def test_sampled_full_gradients_are_read_only_after_logged_steps(monkeypatch):
    logger_checks.check_sampled_full_gradients_are_read_only_after_logged_steps(*regression_data(), monkeypatch)

def test_stats_match_the_full_arrays():
    X, y = regression_data()
    model = compile_model(dense_model([2, 4, 1], ["relu", "linear"], seed=1), "rmsprop")
    logger = GradientLogger(record="full")
    model.fit(X, y, epochs=1, batch_size=8, callbacks=[logger], verbose=0)
    for j, g in enumerate(logger.gradients()):
        s = logger.stats[logger.names[j]]
        flat = g.reshape(len(g), -1).astype(np.float64)
        np.testing.assert_allclose(s["norm"], np.linalg.norm(flat, axis=1), rtol=1e-5)
        np.testing.assert_allclose(s["mean"], flat.mean(axis=1), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(s["std"], flat.std(axis=1), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(s["min"], flat.min(axis=1), rtol=1e-6)
        np.testing.assert_allclose(s["max"], flat.max(axis=1), rtol=1e-6)
        np.testing.assert_allclose(s["max_abs"], np.abs(flat).max(axis=1), rtol=1e-6)
        assert s["nonfinite"].tolist() == [0.0] * len(g)
    weights_norm = logger.stats[logger.names[0]]["weight_norm"]
    assert np.all(weights_norm > 0)


def test_vanishing_gradients_are_flagged_for_sigmoid_not_relu():
    X = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 1)).astype("float32")
    reports = {}
    for activation in ("sigmoid", "relu"):
        model = compile_model(dense_model([16] + [16] * 10 + [1], [activation] * 10 + ["linear"], seed=0), "sgd")
        logger = GradientLogger()
        model.fit(X, y, epochs=2, batch_size=16, callbacks=[logger], verbose=0)
        reports[activation] = logger.health()
    assert reports["sigmoid"].vanishing, str(reports["sigmoid"])
    assert not reports["relu"].vanishing, str(reports["relu"])


def test_dead_relu_units_are_flagged():
    X = np.abs(np.random.default_rng(0).normal(size=(32, 3))).astype("float32")
    y = np.ones((32, 1), "float32")
    model = dense_model([3, 4, 1], ["relu", "linear"], seed=0)
    kernel, bias, k2, b2 = model.get_weights()
    kernel = np.abs(kernel) + 0.1  # inputs are positive: units 0, 2, 3 fire (whatever the backend's initializer drew)
    kernel[:, 1] = -1.0  # unit 1 never fires, so its gradient is always 0
    model.set_weights([kernel, np.zeros_like(bias), k2, b2])
    compile_model(model, "sgd")
    logger = GradientLogger()
    model.fit(X, y, epochs=2, batch_size=8, callbacks=[logger], verbose=0)
    health = logger.health()
    assert health.dead_units == {logger.names[0]: [1]}
    assert "DEAD UNITS" in str(health)



def late_firing_model():
    """Layer 0: unit 1 fires only on the inputs of the last batch of each epoch (x2 > 0, batches
    of 8 unshuffled), unit 3 never; layer 1: every unit always. Returns `(model, X, y)`."""
    X = np.abs(np.random.default_rng(0).normal(size=(48, 3))).astype("float32")
    X[:40, 2] = 0.0
    X[40:, 2] = 3.0
    y = np.ones((48, 1), "float32")
    model = dense_model([3, 4, 4, 1], ["relu", "relu", "linear"], seed=0)
    kernel, bias, k1, b1, k2, b2 = model.get_weights()
    kernel = np.abs(kernel) + 0.1
    kernel[:, 1] = [-1.0, -1.0, 5.0]  # pre-activation -x0 - x1 + 5 x2: positive only where x2 = 3
    kernel[:, 3] = -1.0  # never fires
    k1 = np.abs(k1) + 0.1  # positive inputs, positive kernel: every unit of layer 1 fires
    model.set_weights([kernel, np.zeros_like(bias), k1, np.zeros_like(b1), np.abs(k2) + 0.1, b2])
    compile_model(model, "sgd", learning_rate=1e-4)
    return model, X, y


def test_alive_units_are_found_however_late_they_first_fire():
    # The torch capture stops looking for alive units in a layer once all of them were seen
    # alive (checked every few logged steps). 24 steps, unshuffled, cover several checks. A
    # shortcut taken too early would call unit 1 dead.
    model, X, y = late_firing_model()
    logger = GradientLogger()
    model.fit(X, y, epochs=4, batch_size=8, shuffle=False, callbacks=[logger], verbose=0)
    assert len(logger.steps) == 24
    assert logger.health().dead_units == {logger.names[0]: [3]}

def diverging_model():
    X = np.linspace(0, 300, 30, dtype="float32")[:, None]
    y = 0.05 * X + 7
    model = compile_model(linear_model(seed=0), "sgd", learning_rate=0.01)
    return model, X, y


def test_divergence_is_reported_at_the_first_non_finite_step():
    model, X, y = diverging_model()
    logger = GradientLogger(on_nonfinite="warn")
    with pytest.warns(RuntimeWarning, match=r"non-finite loss at step (\d+) \(epoch \d+\): inf, its gradients still finite"):
        model.fit(X, y, epochs=10, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    nonfinite = logger.stats_array()[:, :, STATS.index("nonfinite")]
    first_loss = int(np.argmax(~np.isfinite(logger.losses)))
    first_grad = int(np.argmax(nonfinite.sum(axis=1) > 0))
    assert first_loss < first_grad and np.all(nonfinite[:first_grad] == 0) and nonfinite[first_grad, 0] > 0
    assert logger.first_nonfinite == {"step": int(logger.steps[first_loss]), "epoch": 0, "layer": None, "variable": None}
    health = logger.health()
    assert health.nonfinite and "first at step 12, the loss (gradients finite)" in str(health)


def test_on_nonfinite_stop_ends_fit_at_that_step():
    model, X, y = diverging_model()
    logger = GradientLogger(on_nonfinite="stop")
    with pytest.warns(RuntimeWarning, match="training stopped"):
        model.fit(X, y, epochs=10, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == logger.first_nonfinite["step"] + 1
    assert logger.steps[-1] == logger.first_nonfinite["step"]


def test_on_nonfinite_raise_leaves_the_model_and_optimizer_clean():
    model, X, y = diverging_model()
    n_vars = len(model.optimizer.variables)
    logger = GradientLogger(on_nonfinite="raise")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+"):
        model.fit(X, y, epochs=10, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps[-1] == logger.first_nonfinite["step"]
    assert "stateless_apply" not in model.optimizer.__dict__ and "train_step" not in model.__dict__
    assert len(model.optimizer.variables) == n_vars
    # The weights Keras wrote back are those after the failing step: training goes on without error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:2], y[:2], epochs=1, batch_size=1, verbose=0)


def test_a_second_logger_continues_the_step_count():
    model, X, y = diverging_model()
    X, y = X[:4] / 300, y[:4] / 300
    first, second = GradientLogger(), GradientLogger()
    model.fit(X, y, epochs=1, batch_size=2, callbacks=[first], verbose=0)
    model.fit(X, y, epochs=1, batch_size=2, callbacks=[second], verbose=0)
    assert first.steps.tolist() == [0, 1] and second.steps.tolist() == [2, 3]


def test_full_gradients_stream_to_disk_and_the_log_round_trips(tmp_path):
    X, y = regression_data()
    results = []
    for path in (None, tmp_path / "grads"):
        model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd")
        logger = GradientLogger(record="full", path=path)
        model.fit(X, y, epochs=2, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)
        results.append(logger)
    assert isinstance(results[1].gradients()[0], np.memmap)
    for a, b in zip(results[0].gradients(), results[1].gradients(), strict=True):
        np.testing.assert_array_equal(a, b)
    back = load_gradient_log(tmp_path / "grads")
    np.testing.assert_array_equal(back.stats_array(), results[1].stats_array())
    results[0].to_npz(tmp_path / "log.npz")
    again = load_gradient_log(tmp_path / "log.npz")
    np.testing.assert_array_equal(again.losses, results[0].losses)
    assert str(again.health()) == str(results[0].health())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gradient_accumulation_logs_every_micro_step(optimizer):
    # Batch 2: dL/dbias = sum(r): -30.8 on rows 0-1, -70.8 on rows 2-3; the update uses their mean.
    make = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer]
    model = lin_model(make(1e-3, gradient_accumulation_steps=2))
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=2, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == [0, 1]
    assert logger.applied.tolist() == [False, True]
    np.testing.assert_allclose(logger.gradients()[1][:, 0], [-30.8, -70.8], rtol=1e-6)
    applied_kernel, applied_bias = logger.applied_gradients()
    assert np.isnan(applied_bias[0]).all() and np.isnan(logger.learning_rates[0])
    np.testing.assert_allclose(applied_bias[1], [LIN_BIAS_GRAD], rtol=1e-6)
    np.testing.assert_allclose(applied_kernel[1, :, 0], LIN_KERNEL_GRAD, rtol=1e-6)
    ratios = logger.stat("update_ratio")
    assert ratios[0].tolist() == [0.0, 0.0] and (ratios[1] > 0).all()
    if optimizer == "sgd":
        np.testing.assert_allclose(model.get_weights()[1], [0.1508], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, clipped", [({"clipnorm": 1.0}, True), ({"global_clipnorm": 1e4}, False), ({"clipvalue": 0.5}, True)], ids=["clipnorm", "global-clipnorm-loose", "clipvalue"]
)
def test_clipping_flag_and_applied_gradients(kwargs, clipped):
    model = lin_model(keras.optimizers.SGD(0.001, **kwargs))
    logger = GradientLogger(record="full")
    model.fit(LIN_X, LIN_Y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    assert logger.clipped.tolist() == [clipped]
    np.testing.assert_allclose(logger.gradients()[0][0, :, 0], LIN_KERNEL_GRAD, rtol=1e-6)
    applied = logger.applied_gradients()[0][0, :, 0]
    if "clipnorm" in kwargs:
        np.testing.assert_allclose(applied, np.array(LIN_KERNEL_GRAD) / np.hypot(*LIN_KERNEL_GRAD), rtol=1e-5)
    elif "clipvalue" in kwargs:
        np.testing.assert_allclose(applied, [-0.5, -0.5])
    else:
        np.testing.assert_allclose(applied, LIN_KERNEL_GRAD, rtol=1e-6)


def overflowing_model():
    """Under mixed_float16, targets of 1e4: the float16 loss scaled by 2**15 overflows,
    LossScaleOptimizer skips the step and halves its scale. Returns `(model, X, y)`."""
    X = np.linspace(-1, 1, 16, dtype="float32")[:, None]
    return compile_model(linear_model(seed=0), "sgd", learning_rate=1e-3), X, 1e4 * X


@pytest.mark.usefixtures("mixed_float16")
def test_mixed_float16_overflow_skips_are_rows_not_errors():
    # A skip is a row with applied=False and skipped=True, never reported.
    model, X, y = overflowing_model()
    logger = GradientLogger(on_nonfinite="raise")
    model.fit(X, y, epochs=2, batch_size=8, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.skipped.any() and not logger.applied[logger.skipped].any()
    assert logger.loss_scales[0] == 2.0**15 and logger.loss_scales[-1] < 2.0**15
    assert logger.first_nonfinite is None and logger.health().skipped == int(logger.skipped.sum())


def health_report(logger):
    """`str(logger.health())` with the variables' names (which number the models) as positions."""
    text = str(logger.health())
    for j, name in enumerate(logger.names):
        text = text.replace(f"'{name}'", f"variable {j}")
    return text


#: torch.Tensor methods that read a tensor to the host (and on an accelerator wait for it).
HOST_READS = ("tolist", "item", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.skipif(BACKEND != "torch", reason="READ_EACH_STEP is the torch capture's: JAX never reads inside its compiled step")
@pytest.mark.parametrize("case", ["diverging", "overflowing", "late_firing"])
def test_on_an_accelerator_no_step_reads_to_the_host_and_the_log_is_the_same(case, monkeypatch, request):
    # On a CPU the capture reads each logged step's reductions at once (`READ_EACH_STEP`); on an
    # accelerator it reads nothing during the step and counts NaN/Inf entries on the device.
    # Taken here on the CPU, that path must log the same: counts of non-finite entries, loss-scale
    # skips, the first non-finite step, dead units. And none of the hooks may read a tensor.
    import torch

    from kerasbp.logger import capture_torch

    if case == "overflowing":
        request.getfixturevalue("mixed_float16")
    make = {"diverging": diverging_model, "overflowing": overflowing_model, "late_firing": late_firing_model}[case]
    epochs = {"diverging": 3, "overflowing": 2, "late_firing": 4}[case]
    batch_size = 1 if case == "diverging" else 8

    def run():
        model, X, y = make()
        logger = GradientLogger(per_example=case == "late_firing")  # its hooks may not read either
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the diverging loss is reported
            model.fit(X, y, epochs=epochs, batch_size=batch_size, shuffle=False, callbacks=[logger], verbose=0)
        return logger

    in_step = []

    def recorded(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            frame, calls = sys._getframe(1), []  # the capture's functions on the stack
            ours = frame.f_code.co_filename.startswith(os.path.dirname(capture_torch.__file__))  # not Keras's own reads
            while frame is not None:
                if frame.f_code.co_filename == capture_torch.__file__:
                    calls.append(frame.f_code.co_name)
                frame = frame.f_back
            if ours and calls and not {"read", "all_finite", "start_run"} & set(calls):  # those run between steps
                in_step.append(f"{name} in {calls[0]}")
            return original(self, *args, **kwargs)

        return method

    on_cpu = run()
    monkeypatch.setattr(capture_torch, "READ_EACH_STEP", ())
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, recorded(name))
    on_device = run()
    assert sorted(set(in_step)) == []  # names the method and the hook that called it
    assert len(on_cpu.steps) == len(on_device.steps) >= 4
    np.testing.assert_array_equal(on_device.stats_array(), on_cpu.stats_array())
    for name in ("steps", "losses", "applied", "skipped", "loss_scales"):
        np.testing.assert_array_equal(getattr(on_device, name), getattr(on_cpu, name))
    assert on_device.first_nonfinite == on_cpu.first_nonfinite
    if case == "late_firing":
        np.testing.assert_array_equal(on_device.per_example_norms(), on_cpu.per_example_norms())
        assert np.isfinite(on_device.per_example_norms()).all()
    assert health_report(on_device) == health_report(on_cpu)
    expected = {
        "diverging": lambda log: log.first_nonfinite is not None and (log.stats_array()[:, :, STATS.index("nonfinite")] > 0).any(),
        "overflowing": lambda log: log.skipped.any() and log.first_nonfinite is None,
        "late_firing": lambda log: log.health().dead_units == {log.names[0]: [3]},
    }
    assert expected[case](on_device)


REFUSED = [({"tensorboard_dir": "tb"}, RuntimeError, "the TensorFlow backend")]  # per_example=True: tests/backends/test_backend_per_example.py


@pytest.mark.parametrize("kwargs, error, needs", REFUSED, ids=[next(iter(c[0])) for c in REFUSED])
def test_tensorflow_only_options_are_refused_by_name(kwargs, error, needs, tmp_path):
    kwargs = {k: str(tmp_path / v) if k == "tensorboard_dir" else v for k, v in kwargs.items()}
    model = compile_model(linear_model(2, seed=0), "sgd")
    with pytest.raises(error, match=f"needs {needs}; Keras is running on '{BACKEND}'"):
        model.fit(LIN_X, LIN_Y, epochs=1, callbacks=[GradientLogger(**kwargs)], verbose=0)


@pytest.mark.parametrize(
    "optimizer, same",
    [(lambda: keras.optimizers.SGD(0.1), True), (lambda: keras.optimizers.Adam(), True), (lambda: keras.optimizers.SGD(0.1, clipnorm=1.0), False)],
    ids=["sgd", "adam", "sgd-clipnorm"],
)
def test_the_backends_own_optimizers_apply_the_loss_gradient_itself(optimizer, same, tmp_path):
    # On torch, keras.optimizers.SGD(...) makes Keras's torch implementation
    # (keras/src/backend/torch/optimizers): its applied gradient is the loss gradient, so it is
    # neither reduced nor stored twice (no applied_*.bin files next to the grad_*.bin).
    from kerasbp.logger.hooks import applied_same

    opt = optimizer()
    assert applied_same(opt) is same
    model = compile_model(linear_model(2, seed=0), opt)
    logger = GradientLogger(record="full", path=str(tmp_path / "log"))
    model.fit(LIN_X, LIN_Y, epochs=1, batch_size=2, shuffle=False, callbacks=[logger], verbose=0)
    files = sorted(p.name for p in (tmp_path / "log").iterdir() if p.suffix == ".bin")
    assert any(f.startswith("grad_") for f in files) and any(f.startswith("applied_") for f in files) is not same
    for a, b in zip(logger.applied_gradients(), logger.gradients(), strict=True):
        if same:
            np.testing.assert_array_equal(a, b)
