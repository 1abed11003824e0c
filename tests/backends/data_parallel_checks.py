"""Checks of `GradientLogger` under `keras.distribution.DataParallel` on JAX with 2 host devices.

JAX fixes its devices when it starts, from `XLA_FLAGS=--xla_force_host_platform_device_count=2`
set before it is imported, so these checks run in a process of their own:
`tests/backends/test_data_parallel.py` starts

    python tests/backends/data_parallel_checks.py OUT.json [CHECK ...]

and reads back, per check, "ok" or the failure's traceback (`tests/check_runner.py`). The
distribution is set once, globally, before any model is made (as Keras asks); JAX's 64-bit mode
is on, so float32 and float64 models both run here.

Tolerances (against the float64 NumPy twin at Keras's own weights; a gradient's error is the norm
of its difference over the norm of the whole step's gradient, as in
`tests/backends/test_backend_logger.py`): float32 `RTOL32 = 1e-5` (Keras's float32 rounding; the
bound used on one device and under MirroredStrategy); float64 `RTOL64 = 1e-12` for the sigmoid
XOR net, whose arithmetic Keras keeps float64 on JAX, but its loss only to 1e-7 (Keras takes the
mean over the outputs in float32 on JAX). Values that Keras and the logger compute with the same
operations are compared exactly.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: check_runner

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # before any array is made

import tempfile  # noqa: E402

from check_runner import report, twin_steps  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasbp as kb  # noqa: E402

RTOL32, RTOL64 = 1e-5, 1e-12
DEVICES = 2

keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))


def set_float(dtype):
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)


def regression_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype("float32")
    y = (X @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return X, y


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def step_errors(got, want):
    """Per variable: |got - want| over the norm of the whole of `want` (all variables)."""
    scale = np.sqrt(sum(float(np.sum(w**2)) for w in want))
    return [float(np.linalg.norm(np.asarray(g, np.float64) - w)) / scale for g, w in zip(got, want, strict=True)]


def clip(grads, threshold):
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in grads))
    return [g * min(1.0, threshold / norm) for g in grads]


class BufferLayouts(keras.callbacks.Callback):
    """Records, after each train call, whether every buffer of the logger's capture, as the step
    returned it (`model._jax_state`), is whole on each of the 2 devices; keeps the capture."""

    def __init__(self, logger):
        super().__init__()
        self.logger, self.replicated, self.capture = logger, [], None

    def on_train_batch_end(self, batch, logs=None):
        capture = self.capture = self.logger._capture
        state = self.model._jax_state["optimizer_variables"]
        arrays = [state[capture._positions[name]] for name in capture.buffers.variables]
        self.replicated.append(all(a.sharding.is_fully_replicated and len(a.sharding.device_set) == DEVICES for a in arrays))


def check_reduced_gradient_equals_the_twins_float32():
    reduced_gradient_equals_the_twins("float32", RTOL32)


def check_reduced_gradient_equals_the_twins_float64():
    set_float("float64")
    try:
        reduced_gradient_equals_the_twins("float64", RTOL64)
    finally:
        set_float("float32")


def reduced_gradient_equals_the_twins(dtype, rtol):
    # XOR repeated 4 times (16 examples, batches of 8: 4 per device), Adam: the logged gradient
    # and loss of each step are the whole batch's, as the twin computes them; the statistics
    # and global norms agree with the arrays; the buffers stay whole on both devices during fit
    # and after it.
    X, y = (np.tile(a, (4, 1)) for a in kb.xor_data(dtype))
    model = kb.compile_model(kb.xor_model(seed=2), "adam", learning_rate=0.05, loss="binary_crossentropy")
    assert model.trainable_weights[0].dtype == dtype
    logger = kb.GradientLogger(record="full", snapshots=True)
    layouts = BufferLayouts(logger)
    model.fit(X, y, batch_size=8, epochs=3, shuffle=False, callbacks=[logger, layouts], verbose=0)
    assert logger.strategy == "DataParallel" and logger.n_replicas == 1, (logger.strategy, logger.n_replicas)
    assert logger.steps.tolist() == list(range(6)), logger.steps
    assert layouts.replicated == [True] * 6, layouts.replicated
    grads = logger.gradients()
    assert all(g.dtype == dtype for g in grads)
    worst = 0.0
    for k, (value, want, _, _) in enumerate(twin_steps(model, logger, X, y, 8, "binary_crossentropy")):
        assert abs(logger.losses[k] - value) <= max(rtol, 1e-7) * value, (k, logger.losses[k], value)
        errors = step_errors([g[k] for g in grads], want)
        worst = max(worst, *errors)
        assert max(errors) <= rtol, (k, errors)
        np.testing.assert_allclose(logger.global_norms[k], np.sqrt(sum(np.sum(w**2) for w in want)), rtol=rtol)
    norms = np.stack([np.linalg.norm(g.reshape(6, -1).astype(np.float64), axis=1) for g in grads], axis=1)
    np.testing.assert_allclose(logger.stat("norm"), norms, rtol=1e-6 if dtype == "float32" else 1e-12)
    for v in layouts.capture.buffers.variables.values():  # detached: the variables hold the values, still whole on each device
        assert v.value.sharding.is_fully_replicated and len(v.value.sharding.device_set) == DEVICES, (v.path, v.value.sharding)
    print(f"{dtype}: worst relative error against the twin {worst:.1e}", file=sys.stderr)


def check_global_clipnorm_clips_the_reduced_gradient():
    # The step sees the reduced gradient, so Keras clips it after the reduction: the applied
    # gradient is clip(g) of the whole batch's g, not the sum of the clipped halves that
    # MirroredStrategy applies, and the weights follow it (SGD: w_next = w - lr * clip(g)).
    X, y = regression_data()
    c, lr = 0.05, 0.05
    model = kb.dense_model([2, 3, 1], ["tanh", "linear"], seed=2)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, global_clipnorm=c), loss="mse")
    logger = kb.GradientLogger(record="full", snapshots=True)
    model.fit(X, y, batch_size=8, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.clipped.all() and not logger.notes, (logger.clipped, logger.notes)
    grads, applied, weights, final = logger.gradients(), logger.applied_gradients(), logger.weights(), model.get_weights()
    gap = []
    for k, (_, want, parts, _) in enumerate(twin_steps(model, logger, X, y, 8, "mse")):
        clipped = clip(want, c)
        summed = [a + b for a, b in zip(clip(parts[0], c), clip(parts[1], c), strict=True)]
        assert max(step_errors([g[k] for g in grads], want)) <= RTOL32, k
        assert max(step_errors([a[k] for a in applied], clipped)) <= RTOL32, k
        after = [w[k + 1] if k + 1 < len(logger.steps) else f for w, f in zip(weights, final, strict=True)]
        followed = [(w[k] - a) / lr for w, a in zip(weights, after, strict=True)]
        assert max(step_errors(followed, clipped)) <= 1e-4, k  # float32 rounding of w - lr * g, over lr
        gap.append(rel(np.concatenate([g.ravel() for g in summed]), np.concatenate([g.ravel() for g in clipped])))
    assert min(gap) > 100 * RTOL32, gap  # the two readings are far apart here
    applied_norms = np.sqrt(np.sum(logger.stat("applied_norm") ** 2, axis=1))
    np.testing.assert_allclose(applied_norms, c, rtol=1e-5)


def check_every_feature_with_streaming_and_steps_per_execution():
    # record="full" streamed to a folder, snapshots, every_n_steps=2, steps_per_execution=2,
    # batches of 4 (2 per device), relu: logged rows, statistics, dead units, health() and the
    # exports work as on one device, and the streamed, saved and loaded logs are the same.
    X, y = regression_data(seed=1)
    model = kb.compile_model(kb.dense_model([2, 4, 1], ["relu", "linear"], seed=0), "sgd", learning_rate=0.05, steps_per_execution=2)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "log")
        logger = kb.GradientLogger(record="full", snapshots=True, every_n_steps=2, path=path)
        model.fit(X, y, batch_size=4, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
        assert logger.steps.tolist() == [0, 2, 4, 6] and logger.epochs.tolist() == [0, 0, 1, 1], logger.steps
        grads = logger.gradients()
        assert isinstance(grads[0], np.memmap)
        for k, (value, want, _, _) in enumerate(twin_steps(model, logger, X, y, 4, "mse")):
            assert abs(logger.losses[k] - value) <= RTOL32 * value
            errors = step_errors([g[k] for g in grads], want)
            assert max(errors) <= RTOL32, (k, errors)
        for j, g in enumerate(grads):
            flat = g.reshape(len(g), -1).astype(np.float64)
            s = logger.stats[logger.names[j]]
            np.testing.assert_allclose(s["norm"], np.linalg.norm(flat, axis=1), rtol=1e-6)
            np.testing.assert_allclose(s["max_abs"], np.abs(flat).max(axis=1), rtol=1e-6)
            np.testing.assert_array_equal(logger.applied_gradients()[j], g)  # SGD without clipping
        health = logger.health()
        assert isinstance(str(health), str) and not health.nonfinite
        logger.to_npz(os.path.join(folder, "log.npz"))
        for back in (kb.load_gradient_log(path), kb.load_gradient_log(os.path.join(folder, "log.npz"))):
            assert back.strategy == "DataParallel"
            np.testing.assert_array_equal(back.stats_array(), logger.stats_array())
            np.testing.assert_array_equal(back.losses, logger.losses)
            for a, b in zip(back.gradients(), grads, strict=True):
                np.testing.assert_array_equal(a, b)
            assert str(back.health()) == str(health)


def check_per_replica_is_refused_by_name():
    X, y = regression_data()
    model = kb.compile_model(kb.linear_model(2, seed=0), "sgd")
    n_variables = len(model.optimizer.variables)
    try:
        model.fit(X, y, batch_size=8, epochs=1, callbacks=[kb.GradientLogger(per_replica=True)], verbose=0)
    except ValueError as e:
        assert "DataParallel" in str(e) and "per_replica=True" in str(e) and "2 devices" in str(e), str(e)
    else:
        raise AssertionError("per_replica=True under DataParallel was not refused")
    assert len(model.optimizer.variables) == n_variables and "train_step" not in model.__dict__


def check_logged_fit_trains_as_an_unlogged_fit():
    # Adam without clipping: the same weights and optimizer variables, bit for bit, with the
    # logger recording all it can. With global_clipnorm the logger also reads the clipped
    # gradient, and XLA compiles the partitioned step with other fusions: the weights then agree
    # to float32 rounding only (measured: one ulp, 7.5e-9, on one bias after 8 or 12 steps), so
    # within 1e-6 relative.
    X, y = regression_data(seed=2)
    for clipping, rtol in (({}, 0.0), ({"global_clipnorm": 1.0}, 1e-6)):
        results = []
        for callbacks in ([], [kb.GradientLogger(record="full", snapshots=True)]):
            model = kb.dense_model([2, 8, 1], ["relu", "linear"], seed=3)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01, **clipping), loss="mse")
            model.fit(X, y, batch_size=4, epochs=2, shuffle=False, callbacks=callbacks, verbose=0)
            results.append(model.get_weights() + [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
        assert len(results[0]) == len(results[1])  # no buffer left in the optimizer
        for i, (a, b) in enumerate(zip(*results, strict=True)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=f"{clipping} {i}")


CHECKS = {name[len("check_") :]: f for name, f in sorted(globals().items()) if name.startswith("check_")}

if __name__ == "__main__":
    sys.exit(report(CHECKS, sys.argv[1:]))
