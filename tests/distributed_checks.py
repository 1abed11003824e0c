"""Checks of `GradientLogger` under `tf.distribute.MirroredStrategy` on 2 logical CPU devices.

TensorFlow fixes its logical devices when it first initializes them, which the other tests have
done by then, so these checks run in a process of their own: `tests/test_distribution.py` starts

    python tests/distributed_checks.py OUT.json [CHECK ...]

and reads back, per check, "ok" or the failure's traceback. Each check raises AssertionError
when the logger is wrong.

Tolerances (float32 Keras against the float64 twin at Keras's own weights, norm-wise relative):
`RTOL = 1e-5`, as in `tests/test_logger.py` (Keras's float32 rounding measured up to 2.5e-6).
Sums that Keras and the logger compute with the same float32 operation are compared exactly.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import kerasbp.native_logs  # noqa: F401,E402  (first: TensorFlow starts without its native log lines)
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import tempfile  # noqa: E402
import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from check_runner import report, twin_steps  # noqa: E402  (this script's folder is first on sys.path)
import kerasbp as kb  # noqa: E402
from kerasbp.logger import gns, replicas  # noqa: E402

RTOL = 1e-5
DEVICES = ["/cpu:0", "/cpu:1"]
# One MirroredStrategy over both devices for every check (`replicas.local_strategy` makes it once):
# a second one over the same devices can reuse collective instance keys, and TensorFlow then
# aborts a step of a model with other shapes.


def regression_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype("float32")
    y = (X @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return X, y


def make_model(optimizer, strategy, steps_per_execution=1):
    """The 2-3-1 regression net, made and compiled in `strategy`'s scope (as Keras requires of
    the model and of the optimizer, which `optimizer()` makes there)."""
    with strategy.scope():
        model = kb.dense_model([2, 3, 1], ["tanh", "linear"], seed=2)
        model.compile(optimizer=optimizer(), loss="mse", steps_per_execution=steps_per_execution)
    return model


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def check_reduced_gradient_equals_the_twins():
    # The logged gradient is the global batch's gradient; each replica's row is its half's
    # gradient times 1/2; the rows add up to the logged gradient exactly; the update applied it.
    X, y = regression_data()
    strategy = replicas.local_strategy(2)
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=0.05), strategy)
    logger = kb.GradientLogger(record="full", snapshots=True, per_replica=True)
    model.fit(X, y, batch_size=8, epochs=3, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.strategy == "MirroredStrategy" and logger.n_replicas == 2
    assert logger.steps.tolist() == list(range(6)), logger.steps
    grads, replica, weights = logger.gradients(), logger.replica_gradients(), logger.weights()
    assert [r.shape for r in replica] == [(6, 2, *s) for s in logger.shapes]
    for k, (value, want, parts, _) in enumerate(twin_steps(model, logger, X, y, 8)):
        assert abs(logger.losses[k] - value) <= RTOL * value, (logger.losses[k], value)
        for j, g in enumerate(want):
            assert rel(grads[j][k], g) <= RTOL, (k, j, rel(grads[j][k], g))
            for r in range(2):
                assert rel(replica[j][k, r], parts[r][j]) <= RTOL, (k, j, r)
            np.testing.assert_array_equal(replica[j][k, 0] + replica[j][k, 1], grads[j][k])
    for a, g in zip(logger.applied_gradients(), grads, strict=True):
        np.testing.assert_array_equal(a, g)  # no clipping: the all-reduced sum is the logged one
    final = model.get_weights()
    for j in range(len(weights)):  # SGD: w_next = w - lr * g, rounded once per step in float32
        after = np.concatenate([weights[j][1:], final[j][None]])
        np.testing.assert_allclose(after, weights[j] - np.float32(0.05) * grads[j], rtol=1e-6, atol=1e-7)
    for j in range(len(weights)):  # update_ratio = |w_after - w_before| / |w_before| (w_before != 0)
        after = np.concatenate([weights[j][1:], final[j][None]])
        with np.errstate(divide="ignore", invalid="ignore"):  # zero biases before the first step
            change = np.linalg.norm((after - weights[j]).reshape(6, -1), axis=1) / np.linalg.norm(weights[j].reshape(6, -1), axis=1)
        finite = np.isfinite(change)
        np.testing.assert_allclose(logger.stat("update_ratio")[finite, j], change[finite], rtol=1e-4)
    norms = np.stack([np.linalg.norm(g.reshape(6, -1), axis=1) for g in grads], axis=1)
    np.testing.assert_allclose(logger.stat("norm"), norms, rtol=1e-5)
    replica_norms = np.stack([np.linalg.norm(r.reshape(6, 2, -1), axis=2) for r in replica], axis=2)
    np.testing.assert_allclose(logger.replica_stat("norm"), replica_norms, rtol=1e-5)
    assert logger.health().ok and not logger.notes


def check_noise_scale_equals_the_formula_with_the_twins_slices():
    # B_simple from the replicas equals McCandlish et al.'s two-batch formula computed from the
    # twin's gradients on each replica's half (small batches of 4) and on the batch (8).
    # Differences of nearly equal squared norms lose digits: rtol 1e-4 on the estimates.
    X, y = regression_data(seed=1)
    strategy = replicas.local_strategy(2)
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=0.05), strategy)
    logger = kb.GradientLogger(snapshots=True)
    model.fit(X, y, batch_size=8, epochs=3, shuffle=False, callbacks=[logger], verbose=0)
    small, big = [], []
    for _, want, parts, _ in twin_steps(model, logger, X, y, 8):
        small.append(np.mean([sum(float(np.sum((2 * g) ** 2)) for g in p) for p in parts]))
        big.append(sum(float(np.sum(g**2)) for g in want))
    expected = gns.two_batch_estimates(4, 8, np.array(small), np.array(big))
    noise = logger.noise
    assert sorted(noise) == ["b_simple_replicas", "g2_replicas", "trace_replicas"], sorted(noise)
    for key in ("g2", "trace", "b_simple"):
        np.testing.assert_allclose(noise[f"{key}_replicas"], expected[key], rtol=1e-4)
    assert logger.noise_scale() == gns.ratio_of_means(noise["trace_replicas"], noise["g2_replicas"])
    np.testing.assert_allclose(logger.noise_scale(), np.mean(expected["trace"]) / np.mean(expected["g2"]), rtol=1e-4)


def check_global_clipnorm_sums_the_replicas_clipped_gradients():
    # Keras clips each replica's share before the all-reduce: the weights follow
    # sum_r clip(g_r), not clip(sum_r g_r), and the logger says so. Fit inside the scope, and
    # stream to a folder, as a user may.
    X, y = regression_data()
    strategy = replicas.local_strategy(2)
    c, lr = 0.05, 0.05
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=lr, global_clipnorm=c), strategy)

    def clip(gs):
        norm = np.sqrt(sum(float(np.sum(g**2)) for g in gs))
        return [g * min(1.0, c / norm) for g in gs]

    with tempfile.TemporaryDirectory() as folder:
        logger = kb.GradientLogger(record="full", snapshots=True, per_replica=True, path=os.path.join(folder, "log"))
        with warnings.catch_warnings(record=True) as caught, strategy.scope():
            warnings.simplefilter("always")
            model.fit(X, y, batch_size=8, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
        assert any("per replica, before the all-reduce" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert logger.clipped.all(), logger.clipped
        applied, weights, final = logger.applied_gradients(), logger.weights(), model.get_weights()
        gap = []
        for k, (_, want, parts, _) in enumerate(twin_steps(model, logger, X, y, 8)):
            summed = [a + b for a, b in zip(clip(parts[0]), clip(parts[1]), strict=True)]
            wrong = clip(want)
            for j in range(len(want)):
                assert rel(applied[j][k], summed[j]) <= RTOL, (k, j, rel(applied[j][k], summed[j]))
                after = weights[j][k + 1] if k + 1 < len(logger.steps) else final[j]
                assert rel((weights[j][k] - after) / lr, summed[j]) <= 1e-4  # the weights followed it
                gap.append(rel(summed[j], wrong[j]))
        assert min(gap) > 100 * RTOL, gap  # the two readings are far apart here
        health = logger.health()
        assert "per replica, before the all-reduce" in str(health) and health.notes == logger.notes
        back = kb.load_gradient_log(os.path.join(folder, "log"))
        assert back.n_replicas == 2 and back.per_replica and back.notes == logger.notes
        for a, b in zip(back.replica_gradients(), logger.replica_gradients(), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(back.noise["b_simple_replicas"], logger.noise["b_simple_replicas"])


def check_stats_mode_uneven_batch_and_every_n_steps():
    # record="stats" under the strategy: the rows and their norms match the twin; the uneven
    # last batch (3 examples: 2 and 1 per replica) gets NaN noise estimates; npz export,
    # TensorBoard and every_n_steps work. (steps_per_execution > 1 is not tried: plain Keras
    # 3.15.1 fit fails with it under MirroredStrategy, "You must feed a value for placeholder".)
    X, y = regression_data(n=19)
    strategy = replicas.local_strategy(2)
    model = make_model(lambda: keras.optimizers.Adam(learning_rate=0.01), strategy)
    with tempfile.TemporaryDirectory() as folder:
        logger = kb.GradientLogger(every_n_steps=1, snapshots=True, per_replica=True, tensorboard_dir=os.path.join(folder, "tb"))
        model.fit(X, y, batch_size=8, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
        assert logger.steps.tolist() == list(range(6)), logger.steps
        assert os.listdir(os.path.join(folder, "tb"))
        steps = twin_steps(model, logger, X, y, 8)
        for k, (value, want, parts, size) in enumerate(steps):
            norm = np.sqrt(sum(float(np.sum(g**2)) for g in want))
            got = np.sqrt(np.sum(logger.stat("norm")[k] ** 2))
            if size == 8:
                assert abs(got - norm) <= RTOL * norm, (k, got, norm)
                assert abs(logger.losses[k] - value) <= RTOL * value
            for r in range(2):  # each replica's own gradient, also on the uneven batch
                want_r = np.array([np.linalg.norm(g) for g in parts[r]])
                np.testing.assert_allclose(logger.replica_stat("norm")[k, r], want_r, rtol=RTOL)
        uneven = np.array([size != 8 for *_, size in steps])
        assert uneven.tolist() == [False, False, True] * 2
        assert np.isnan(logger.noise["b_simple_replicas"][uneven]).all()
        assert np.isfinite(logger.noise["b_simple_replicas"][~uneven]).all()
        logger.to_npz(os.path.join(folder, "log.npz"))
        back = kb.load_gradient_log(os.path.join(folder, "log.npz"))
        np.testing.assert_array_equal(back.replica_stats_array(), logger.replica_stats_array())
        np.testing.assert_array_equal(back.noise["g2_replicas"], logger.noise["g2_replicas"])
    every = kb.GradientLogger(every_n_steps=2)
    model.fit(X, y, batch_size=8, epochs=2, shuffle=False, callbacks=[every], verbose=0)
    assert every.steps.tolist() == [6, 8, 10], every.steps
    assert len(every.noise["b_simple_replicas"]) == 3


def check_one_device_mirrored_strategy_is_one_replica():
    # MirroredStrategy on one device: the same path with one replica; no noise estimates.
    X, y = regression_data()
    strategy = tf.distribute.MirroredStrategy(DEVICES[:1])
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=0.05), strategy)
    logger = kb.GradientLogger(record="full", snapshots=True, per_replica=True)
    model.fit(X, y, batch_size=8, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.n_replicas == 1 and logger.noise == {} and logger.steps.tolist() == [0, 1]
    for k, (_, want, _, _) in enumerate(twin_steps(model, logger, X, y, 8)):
        for j, g in enumerate(want):
            assert rel(logger.gradients()[j][k], g) <= RTOL
            np.testing.assert_array_equal(logger.replica_gradients()[j][k, 0], logger.gradients()[j][k])


def check_refusals():
    # kb.train and strategies the logger cannot record are refused by name.
    X, y = regression_data()
    strategy = replicas.local_strategy(2)
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=0.05), strategy)
    try:
        kb.train(model, X, y, epochs=1, batch_size=8)
    except ValueError as e:
        assert "MirroredStrategy" in str(e) and "model.fit" in str(e), str(e)
    else:
        raise AssertionError("kb.train under MirroredStrategy was not refused")
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    model = make_model(lambda: keras.optimizers.SGD(learning_rate=0.05), one)
    try:
        model.fit(X, y, batch_size=8, epochs=1, callbacks=[kb.GradientLogger()], verbose=0)
    except ValueError as e:
        assert "OneDeviceStrategy" in str(e), str(e)
    else:
        raise AssertionError("OneDeviceStrategy was not refused")
    model = make_model(lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=0.05)), strategy)
    try:
        model.fit(X, y, batch_size=8, epochs=1, callbacks=[kb.GradientLogger()], verbose=0)
    except ValueError as e:
        assert "MirroredStrategy" in str(e) and "LossScaleOptimizer" in str(e), str(e)
    else:
        raise AssertionError("a LossScaleOptimizer under MirroredStrategy was not refused")


def check_jobs_with_devices_train_as_on_one_device():
    # run_linear(devices=2) trains with model.fit under MirroredStrategy; batches of 10 split
    # 5/5, so each step applies the batch's gradient, as on one device: the same coefficients
    # (float32 rounding apart) and a noise scale.
    from kerasbp.jobs import run_linear

    one, two = run_linear(epochs=3), run_linear(epochs=3, devices=2)
    assert one["devices"] == 1 and one["noise_scale"] is None
    assert two["devices"] == 2 and np.isfinite(two["noise_scale"]), two["noise_scale"]
    np.testing.assert_allclose(two["coefficients"], one["coefficients"], rtol=1e-5)
    assert abs(two["intercept"] - one["intercept"]) <= 1e-5 * abs(one["intercept"])


CHECKS = {name[len("check_") :]: f for name, f in sorted(globals().items()) if name.startswith("check_")}


if __name__ == "__main__":
    sys.exit(report(CHECKS, sys.argv[1:]))
