"""GradientLogger records the gradients the optimizer applied, from inside fit."""

import csv
import gc
import glob
import json
import warnings
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbp import compile_model, dense_model, linear_model, train, xor_data, xor_model
from kerasbp.logger import STATS, GradientLogger, load_gradient_log

import logger_checks  # tests/: the checks shared with the other backends' tests


def regression_data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype("float32")
    y = (X @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return X, y


def test_worked_case_first_step_gradients():
    # Dense(1), zero weights, SGD 0.1, X = [-1, 0, 1, 2], y = 2x + 1, one full batch.
    # yhat = 0, dL/dyhat = 2 (yhat - y) / 4 = -y / 2 with y = [-1, 1, 3, 5]:
    # dL/dw = sum(x * -y / 2) = -(1 + 0 + 3 + 10) / 2 = -7, dL/db = -(-1 + 1 + 3 + 5) / 2 = -4.
    X = np.array([[-1.0], [0.0], [1.0], [2.0]], "float32")
    y = 2 * X + 1
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    logger = GradientLogger(record="full")
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[logger], verbose=0)
    kernel, bias = logger.gradients()
    assert kernel[0, 0, 0] == -7.0 and bias[0, 0] == -4.0
    assert logger.losses.tolist() == [9.0]  # mean(y^2) = (1 + 1 + 9 + 25) / 4 at the weights before the step
    assert logger.stats[logger.names[0]]["norm"].tolist() == [7.0]
    # The common workaround, recomputing after the step (w = 0.7, b = 0.4), gets another answer.
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y[:, 0], model(X)[:, 0])
    after = [g.numpy().ravel()[0] for g in tape.gradient(loss, model.trainable_weights)]
    np.testing.assert_allclose(after, [-4.5, -2.5], rtol=1e-6)


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_sgd_logged_gradient_is_the_applied_update(steps_per_execution):
    # w_after = w_before - lr * g exactly, for every step, with shuffle=True and a partial last
    # batch (37 samples, batch 5: 7 full batches and one of 2).
    X, y = regression_data()
    lr = 0.05
    model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=lr, steps_per_execution=steps_per_execution)
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=3, batch_size=5, shuffle=True, callbacks=[logger], verbose=0)
    assert logger.steps.tolist() == list(range(24))
    grads, weights = logger.gradients(), logger.weights()
    for j, final in enumerate(model.get_weights()):
        trajectory = np.concatenate([weights[j], final[None]])  # (25, *shape)
        applied = (trajectory[:-1] - trajectory[1:]) / np.float32(lr)
        # float32 rounding of w - lr*g, divided by lr: |error| <= ulp(w) / lr
        tolerance = 2 * np.spacing(np.abs(trajectory[:-1]).max()) / lr
        np.testing.assert_allclose(applied, grads[j], rtol=0, atol=tolerance)
    # the partial batch of 2 samples happened: every 8th step
    assert np.all(np.isfinite(logger.losses))


def test_every_n_steps_and_counting_across_fits():
    X, y = regression_data()
    model = compile_model(linear_model(2, seed=0), "sgd")
    logger = GradientLogger(every_n_steps=3)
    model.fit(X, y, epochs=2, batch_size=10, callbacks=[logger], verbose=0)  # 8 steps: 0, 3, 6
    model.fit(X, y, epochs=1, batch_size=10, callbacks=[logger], verbose=0)  # steps 8..11: 9
    assert logger.steps.tolist() == [0, 3, 6, 9]
    assert logger.epochs.tolist() == [0, 0, 1, 0]  # epochs within each fit
    assert logger.stats_array().shape == (4, 2, len(STATS))


def test_sampled_full_gradients_are_read_only_after_logged_steps(monkeypatch):
    logger_checks.check_sampled_full_gradients_are_read_only_after_logged_steps(*regression_data(), monkeypatch)

def test_train_fast_path_logs_the_same_as_fit():
    X, y = xor_data()
    logs = []
    for fit in (True, False):
        model = compile_model(xor_model(seed=3), "adam", learning_rate=0.1, loss="binary_crossentropy")
        logger = GradientLogger(record="full")
        if fit:
            model.fit(X, y, epochs=20, batch_size=3, shuffle=False, callbacks=[logger], verbose=0)
        else:
            train(model, X, y, epochs=20, batch_size=3, callbacks=[logger])
        logs.append(logger)
    a, b = logs
    assert a.steps.tolist() == b.steps.tolist() == list(range(40))
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)  # XLA vs plain TF: float32 rounding
    for ga, gb in zip(a.gradients(), b.gradients(), strict=True):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-6)


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
        np.testing.assert_allclose(s["max_abs"], np.abs(flat).max(axis=1), rtol=1e-6)
        assert s["nonfinite"].tolist() == [0.0] * len(g)


def test_vanishing_gradients_are_flagged_for_sigmoid_not_relu():
    X = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 1)).astype("float32")
    reports = {}
    for activation in ("sigmoid", "relu"):
        model = dense_model([16] + [16] * 10 + [1], [activation] * 10 + ["linear"], seed=0)
        compile_model(model, "sgd")
        logger = GradientLogger()
        model.fit(X, y, epochs=2, batch_size=16, callbacks=[logger], verbose=0)
        reports[activation] = logger.health()
    assert reports["sigmoid"].vanishing, str(reports["sigmoid"])
    assert reports["sigmoid"].figures["first_last_ratio"] < 1e-3
    assert not reports["relu"].vanishing, str(reports["relu"])
    assert reports["relu"].figures["first_last_ratio"] > 1e-2
    assert "VANISHING" in str(reports["sigmoid"])


def test_dead_relu_units_are_flagged():
    X = np.abs(np.random.default_rng(0).normal(size=(32, 3))).astype("float32")
    y = np.ones((32, 1), "float32")
    model = dense_model([3, 4, 1], ["relu", "linear"], seed=0)
    kernel, bias, k2, b2 = model.get_weights()
    kernel[:, 1] = -1.0  # inputs are positive: unit 1 never fires, so its gradient is always 0
    model.set_weights([kernel, bias, k2, b2])
    compile_model(model, "sgd")
    logger = GradientLogger()
    model.fit(X, y, epochs=2, batch_size=8, callbacks=[logger], verbose=0)
    health = logger.health()
    assert health.dead_units == {logger.names[0]: [1]}
    assert "DEAD UNITS" in str(health)


def diverging_model():
    X = np.linspace(0, 300, 30, dtype="float32")[:, None]
    y = 0.05 * X + 7
    model = compile_model(linear_model(seed=0), "sgd", learning_rate=0.01)
    return model, X, y


def test_divergence_is_reported_at_the_first_non_finite_step_and_variable():
    # The loss overflows one step before the gradients do: the first report names the loss.
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
    assert health.nonfinite and health.figures["first_nonfinite_step"] == logger.steps[first_loss]
    assert "first at step 12, the loss (gradients finite)" in str(health)


def test_on_nonfinite_stop_ends_fit_at_that_step():
    model, X, y = diverging_model()
    logger = GradientLogger(on_nonfinite="stop")
    with pytest.warns(RuntimeWarning, match="training stopped"):
        model.fit(X, y, epochs=10, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == logger.first_nonfinite["step"] + 1
    assert logger.steps[-1] == logger.first_nonfinite["step"]


def test_on_nonfinite_raise():
    model, X, y = diverging_model()
    logger = GradientLogger(on_nonfinite="raise")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+"):
        model.fit(X, y, epochs=10, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    # the data up to the failing step stays readable, and the optimizer is unhooked
    assert logger.steps[-1] == logger.first_nonfinite["step"]
    assert "apply" not in model.optimizer.__dict__


def test_exports_round_trip(tmp_path):
    X, y = regression_data()
    model = compile_model(dense_model([2, 3, 1], ["relu", "linear"], seed=0), "adam")
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=2, batch_size=10, callbacks=[logger], verbose=0)
    logger.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    np.testing.assert_array_equal(back.steps, logger.steps)
    np.testing.assert_array_equal(back.losses, logger.losses)
    np.testing.assert_array_equal(back.stats_array(), logger.stats_array())
    for a, b in zip(back.gradients(), logger.gradients(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.optimizer_state(), logger.optimizer_state(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.names == logger.names and back.shapes == logger.shapes
    assert str(back.health()) == str(logger.health())
    logger.to_csv(tmp_path / "log.csv")
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(logger.steps) * 4
    assert float(rows[5]["norm"]) == logger.stats[logger.names[1]]["norm"][1]
    assert not glob.glob(str(tmp_path / ".tmp-*"))  # no temporary files left


def test_full_gradients_stream_to_disk(tmp_path):
    X, y = regression_data()
    results = []
    for path in (None, tmp_path / "grads"):
        model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd")
        logger = GradientLogger(record="full", path=path)
        model.fit(X, y, epochs=2, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)
        results.append(logger.gradients())
    assert isinstance(results[1][0], np.memmap)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_memory_bound_without_a_path():
    X, y = regression_data()
    model = compile_model(dense_model([2, 256, 256, 1], ["relu", "relu", "linear"], seed=0), "sgd")
    logger = GradientLogger(record="full", max_memory_mb=1)  # 66k float32 parameters = 0.26 MB a step
    with pytest.raises(MemoryError, match="over max_memory_mb=1. Pass path="):
        model.fit(X, y, epochs=2, batch_size=4, callbacks=[logger], verbose=0)
    assert 1 <= len(logger.gradients()[0]) <= 4


def test_missing_gradient_is_named_not_dropped():
    inputs = keras.Input((2,))
    used = keras.layers.Dense(1, name="used")(inputs)
    unused = keras.layers.Dense(1, name="unused")
    unused.build((None, 2))
    model = keras.Model(inputs, used)
    model.unused = unused  # tracked and trainable, but the loss does not depend on it
    model.compile("sgd", "mse")
    X, y = regression_data()
    assert len(model.trainable_weights) == 4
    logger = GradientLogger()
    with pytest.warns(RuntimeWarning, match=r"no gradient for \['unused/kernel', 'unused/bias'\]"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Gradients do not exist")
            model.fit(X, y, epochs=1, batch_size=37, callbacks=[logger], verbose=0)
    norms = logger.stats_array()[:, :, 0]
    assert np.isfinite(norms[:, :2]).all() and np.isnan(norms[:, 2:]).all()


def test_tensorboard_writes_histograms_and_norms(tmp_path):
    X, y = regression_data()
    model = compile_model(linear_model(2, seed=0), "sgd")
    model.fit(X, y, epochs=1, batch_size=10, callbacks=[GradientLogger(tensorboard_dir=tmp_path)], verbose=0)
    tags = set()
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    name = model.trainable_weights[0].path
    assert {"loss", f"gradient_norm/{name}", f"gradients/{name}"} <= tags


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"every_n_steps": 0}, ValueError, "`every_n_steps` must be a positive integer"),
        ({"record": "everything"}, ValueError, r"`record` must be one of \['stats', 'full'\]"),
        ({"on_nonfinite": "ignore"}, ValueError, "`on_nonfinite` must be one of"),
        ({"path": "x"}, ValueError, 'needs record="full"'),
        ({"max_memory_mb": -1}, ValueError, "max_memory_mb"),
    ],
    ids=["every-n", "record", "on-nonfinite", "path-without-full", "memory"],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradientLogger(**kwargs)


def test_gradients_need_full_record_and_other_backends_are_refused(monkeypatch):
    with pytest.raises(ValueError, match='record="full"'):
        GradientLogger().gradients()
    model = compile_model(linear_model(seed=0), "sgd")
    monkeypatch.setattr(keras.backend, "backend", lambda: "openvino")
    logger = GradientLogger()
    logger.set_model(model)
    with pytest.raises(RuntimeError, match=r"supports the backends \[.*\]; Keras is running on 'openvino'"):
        logger.on_train_begin()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.parametrize("task", ["xor", "linear"])
def test_logged_gradients_equal_the_twins_at_kerass_weights(optimizer, task, dtype, request):
    # At every step, the NumPy twin's gradient at the weights Keras had before that step (recorded
    # by snapshots) equals the logged gradient. The twin computes in float64 from those weights,
    # i.e. the exact gradient. Norm-wise relative error |logged - exact| / |exact|:
    #   float64 Keras: 1e-12 (measured ~1e-15).
    #   float32 Keras: 1e-5. Keras's own float32 rounding is measured at up to 2.5e-6 on the XOR
    #   net (a sigmoid output near 1 loses digits in a * (1 - a)), so 1e-6 cannot hold in float32.
    from kerasbp.reference import NumpyMLP

    if dtype == "float64":
        request.getfixturevalue("float64")
    rtol = 1e-5 if dtype == "float32" else 1e-12
    if task == "xor":
        X, y = xor_data(dtype)
        model, loss, batch = xor_model(seed=2), "binary_crossentropy", 3
    else:
        X, y = (a.astype(dtype) for a in regression_data())
        model, loss, batch = dense_model([2, 3, 1], ["tanh", "linear"], seed=2), "mse", 8
    compile_model(model, optimizer, learning_rate=0.05, loss=loss)
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, epochs=5, batch_size=batch, shuffle=False, callbacks=[logger], verbose=0)
    twin = NumpyMLP.from_keras(model).astype("float64")
    X, y = X.astype("float64"), y.astype("float64")
    starts = list(range(0, len(X), batch))
    grads, weights = logger.gradients(), logger.weights()
    assert len(logger.steps) == 5 * len(starts)
    for k, step in enumerate(logger.steps):
        start = starts[step % len(starts)]
        twin.set_params([w[k].astype("float64") for w in weights])
        value, expected = twin.gradients(X[start : start + batch], y[start : start + batch], loss)
        assert logger.losses[k] == pytest.approx(float(value), rel=rtol)
        for got, want in zip((g[k] for g in grads), expected, strict=True):
            assert got.dtype == dtype
            assert np.linalg.norm(got - want) <= rtol * np.linalg.norm(want)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_update_ratio_from_captured_increments_equals_the_weight_change(optimizer):
    # Without snapshots the update |dw| comes from the optimizer's assign_add/assign_sub
    # increments; with snapshots from w_after - w_before. Both give the same update ratio.
    X, y = regression_data()
    ratios, norms = [], []
    for snapshots in (False, True):
        model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), optimizer, learning_rate=0.05)
        logger = GradientLogger(snapshots=snapshots)
        model.fit(X, y, epochs=2, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)
        ratios.append(logger.stats_array()[:, :, STATS.index("update_ratio")])
        norms.append(logger.stats_array()[:, :, STATS.index("weight_norm")])
    np.testing.assert_array_equal(norms[0], norms[1])
    np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-4)  # |dw| of float32 w_after - w_before
    assert np.isinf(ratios[0][0, 1])  # biases start at zero: |dw| / 0
    if optimizer == "sgd":  # |dw| = lr |g|, where the weights are nonzero
        a = logger.stats_array()
        nonzero = norms[0] > 0
        np.testing.assert_allclose(ratios[0][nonzero] * norms[0][nonzero], 0.05 * a[:, :, STATS.index("norm")][nonzero], rtol=1e-6)


# ---------------------------------------------------------------- defects found on review


def test_a_reused_logger_acts_on_nonfinite_in_every_fit():
    # Before the fix, the flag that made the first fit raise was never reset, so the second fit
    # of the same logger trained on through NaN gradients silently.
    X = 100 * np.arange(-4, 4, dtype="float32").reshape(-1, 1)
    y = 3 * X
    model = compile_model(linear_model(1), keras.optimizers.SGD(1e4))
    logger = GradientLogger(on_nonfinite="raise")
    for _ in range(2):
        model.set_weights([np.zeros((1, 1), "float32"), np.zeros(1, "float32")])
        model.optimizer.iterations.assign(0)
        with pytest.raises(FloatingPointError, match="non-finite (loss|gradient) at step"):
            model.fit(X, y, epochs=20, batch_size=2, shuffle=False, callbacks=[logger], verbose=0)


def _two_sided_relu_model():
    # Hidden unit 0 is active for x > 0 only, unit 1 for x < 0 only (kernel [[1, -1]], bias 0),
    # so on positive data only unit 0's kernel gets a gradient, on negative data only unit 1's.
    model = dense_model([1, 2, 1], ["relu", "linear"], seed=0)
    model.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32"), np.ones((2, 1), "float32"), np.zeros(1, "float32")])
    return compile_model(model, keras.optimizers.SGD(1e-4))


def test_dead_units_combine_over_runs_with_rebuilt_buffers():
    model = _two_sided_relu_model()
    positive = np.linspace(1, 2, 8, dtype="float32").reshape(-1, 1)
    logger = GradientLogger()
    model.fit(positive, 5 * positive, epochs=1, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.health().dead_units == {logger.names[0]: [1]}  # unit 1 had no gradient yet
    # kb.train runs 400 steps per call here: device buffers of more rows are made for it.
    train(model, -positive, 5 * positive, epochs=200, batch_size=4, callbacks=[logger])
    assert len(logger.steps) == 2 + 400
    assert logger.health().dead_units == {}  # unit 0 had gradients in the first run, unit 1 in the second


def test_two_loggers_in_a_row_on_one_model_each_log_their_run_and_trace_once(count_traces):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    traces = count_traces(model)
    first = GradientLogger(record="full")
    train(model, X, y, epochs=5, batch_size=4, callbacks=[first])
    first_steps = first.steps.copy()
    n_traced = len(traces)
    del first
    gc.collect()  # the first logger's objects die, and a new one may get their ids
    second = GradientLogger(record="full")
    train(model, X, y, epochs=5, batch_size=4, callbacks=[second])
    np.testing.assert_array_equal(first_steps, np.arange(5))
    np.testing.assert_array_equal(second.steps, np.arange(5, 10))
    assert len(traces) == n_traced  # the second logger reused the traced loop
    # and what it logged is this run's gradients: the step-5 gradient at the weights after 5 steps
    twin_model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    train(twin_model, X, y, epochs=5, batch_size=4)
    with tf.GradientTape() as tape:
        loss = twin_model.compute_loss(X, y, twin_model(X, training=True))
    expected = tape.gradient(loss, twin_model.trainable_weights)
    for logged, g in zip(second.gradients(), expected, strict=True):
        np.testing.assert_allclose(logged[0], g.numpy(), rtol=1e-5, atol=1e-7)


def test_train_documents_every_verbose_value_it_accepts(capsys):
    assert "2 (one line per epoch)" in " ".join(train.__doc__.split())
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd")
    train(model, X, y, epochs=3, batch_size=4, verbose=2, epochs_per_call=1)
    assert capsys.readouterr().out.count("loss:") == 3
    with pytest.raises(ValueError, match="verbose"):
        train(model, X, y, epochs=1, verbose=3)


def test_an_empty_snapshot_log_saves_and_loads(tmp_path):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd")
    train(model, X, y, epochs=1, batch_size=4)  # iteration 0 is done without a logger
    logger = GradientLogger(every_n_steps=100, snapshots=True)
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[logger], verbose=0)  # iteration 1: not logged
    assert len(logger) == 0
    logger.to_npz(tmp_path / "empty.npz")
    back = load_gradient_log(tmp_path / "empty.npz")
    assert len(back) == 0
    assert [w.shape for w in back.weights()] == [(0, 2, 4), (0, 4), (0, 4, 1), (0, 1)]


def test_a_log_streamed_to_disk_saves_and_loads(tmp_path):
    X, y = regression_data()
    model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd")
    logger = GradientLogger(record="full", path=tmp_path / "grads")
    model.fit(X, y, epochs=2, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)
    logger.to_npz(tmp_path / "log.npz")
    for back in (load_gradient_log(tmp_path / "log.npz"), load_gradient_log(tmp_path / "grads")):
        np.testing.assert_array_equal(back.steps, np.arange(8))
        np.testing.assert_array_equal(back.stats_array(), logger.stats_array())
        assert back.names == logger.names
        for a, b in zip(back.gradients(), logger.gradients(), strict=True):
            assert a.shape[0] == 8
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- optimizer paths: columns and exports


def _lin_like(optimizer, seed=0):
    # 11 samples, batch 4: a partial last batch.
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(11, 2)).astype("float32")
    y = (3 * X[:, :1] - X[:, 1:] + 20).astype("float32")
    model = dense_model([2, 3, 1], ["relu", "linear"], seed=seed)
    model.compile(optimizer, "mse")
    return model, X, y


def test_new_columns_round_trip_through_npz_and_csv(tmp_path):
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01, clipnorm=0.5, gradient_accumulation_steps=2), initial_scale=2.0**8)
    model, X, y = _lin_like(optimizer)
    logger = GradientLogger(record="full", snapshots=True)
    model.fit(X, y, batch_size=4, epochs=3, callbacks=[logger], verbose=0)
    assert not logger.applied_same and logger.applied.tolist() == [False, True] * 4 + [False]
    logger.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    for name in ("steps", "iterations", "losses", "applied", "skipped", "clipped", "learning_rates", "loss_scales", "global_norms"):
        np.testing.assert_array_equal(getattr(back, name), getattr(logger, name), err_msg=name)
    for a, b in zip(back.applied_gradients(), logger.applied_gradients(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.stat("applied_norm"), logger.stat("applied_norm"))
    assert back.clipping == logger.clipping == {"clipnorm": 0.5, "global_clipnorm": None, "clipvalue": None}
    assert np.isnan(logger.stat("applied_norm")[~logger.applied]).all()
    logger.to_csv(tmp_path / "log.csv")
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 * 4
    assert [int(r["applied"]) for r in rows[::4]] == logger.applied.astype(int).tolist()
    assert float(rows[4]["learning_rate"]) == logger.learning_rates[1] and float(rows[4]["loss_scale"]) == 256.0
    assert float(rows[4]["global_norm"]) == logger.global_norms[1]
    assert float(rows[5]["applied_norm"]) == logger.stats[logger.names[1]]["applied_norm"][1]


def test_a_log_saved_before_the_new_columns_still_loads(tmp_path):
    old_stats = ("norm", "mean", "std", "min", "max", "max_abs", "nonfinite", "weight_norm", "update_ratio")
    stats = np.arange(3 * 2 * 9, dtype=float).reshape(3, 2, 9)
    meta = {"names": ["d/kernel", "d/bias"], "layers": ["d", "d"], "activations": ["", ""], "shapes": [[2, 1], [1]], "record": "stats", "every_n_steps": 1, "stats": list(old_stats)}
    np.savez(tmp_path / "old.npz", steps=np.arange(3), epochs=np.zeros(3, int), losses=np.ones(3), stats=stats, meta=np.array(json.dumps(meta)))
    log = load_gradient_log(tmp_path / "old.npz")
    np.testing.assert_array_equal(log.stats_array()[:, :, :9], stats)
    assert np.isnan(log.stat("applied_norm")).all()
    assert log.iterations.tolist() == [1, 2, 3] and log.applied.all() and not log.skipped.any() and not log.clipped.any()
    assert np.isnan(log.learning_rates).all() and np.isnan(log.loss_scales).all()
    assert log.clipping == {"clipnorm": None, "global_clipnorm": None, "clipvalue": None}
    str(log.health())  # prints


def test_applied_gradients_stream_to_disk(tmp_path):
    results = []
    for path in (None, tmp_path / "grads"):
        model, X, y = _lin_like(keras.optimizers.SGD(0.01, clipvalue=0.1))
        logger = GradientLogger(record="full", path=path)
        model.fit(X, y, batch_size=4, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
        results.append(logger.applied_gradients())
    back = load_gradient_log(tmp_path / "grads").applied_gradients()
    assert isinstance(back[0], np.memmap)
    for a, b, c in zip(*results, back, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert np.abs(a).max() <= np.float32(0.1)


def test_tensorboard_writes_the_new_columns(tmp_path):
    model, X, y = _lin_like(keras.optimizers.SGD(0.01, clipnorm=1.0))
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[GradientLogger(tensorboard_dir=tmp_path)], verbose=0)
    tags = set()
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            tags.update(v.tag for v in tf.compat.v1.Event.FromString(record.numpy()).summary.value)
    name = model.trainable_weights[0].path
    assert {"global_gradient_norm", "learning_rate", "loss_scale", "clipped", "applied", f"applied_norm/{name}"} <= tags


@pytest.mark.parametrize("accumulation", [None, 2], ids=["every-step", "accumulate-2"])
@pytest.mark.parametrize("make", [keras.optimizers.Adam, keras.optimizers.SGD, partial(keras.optimizers.SGD, clipnorm=0.5)], ids=["adam", "sgd", "sgd-clipnorm"])
def test_update_ratio_from_increments_under_loss_scaling(accumulation, make):
    # The inner optimizer's increments (no weight copy; plain SGD: the learning rate times the
    # applied gradient's norm) against w_after - w_before (snapshots).
    ratios = []
    for snapshots in (False, True):
        inner = make(0.05, gradient_accumulation_steps=accumulation)
        model, X, y = _lin_like(keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**8))
        logger = GradientLogger(snapshots=snapshots)
        model.fit(X, y, batch_size=4, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
        ratios.append(logger.stat("update_ratio"))
    np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-4)  # |dw| of float32 w_after - w_before
    moved = ratios[0][:, 0] > 0
    assert moved.tolist() == logger.applied.tolist()


def test_train_fast_path_with_loss_scale_skips_runs_to_the_end():
    # Overflow skips are not non-finite steps: an on_nonfinite="stop" logger lets kb.train finish.
    # Targets in the tens overflow float16 at the initial scale 2**15 (see test_optimizer_paths).
    X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], "float32")
    y = np.array([[10], [20], [30], [40]], "float32")
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(1e-3), "mse")
    finally:
        keras.config.set_dtype_policy("float32")
    logger = GradientLogger(on_nonfinite="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = train(model, X, y, epochs=20, batch_size=2, callbacks=[logger])
    assert len(history.history["loss"]) == 20
    assert logger.skipped.sum() > 0 and logger.applied.sum() == 40 - logger.skipped.sum()
    assert logger.steps.tolist() == list(range(40))
    assert int(model.optimizer.iterations.numpy()) == logger.applied.sum()
