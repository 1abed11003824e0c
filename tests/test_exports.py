"""The exports of a log recorded from a real `fit`: CSV, `.npz`, a streamed folder and TensorBoard.

Each is read back independently and compared with the log cell by cell: the CSV with Python's
`csv` module, the `.npz` through `load_gradient_log`, and the TensorBoard event files with
TensorBoard's own `EventAccumulator`, its scalars against the logged losses and norms and its
histograms against buckets recomputed here from the logged gradients.
"""

import glob

import numpy as np
import pytest
import tensorflow as tf

from kerasbp import compile_model, dense_model
from kerasbp.logger import GradientLogger, load_gradient_log

from test_log import assert_same_log, check_csv_against_log


@pytest.fixture
def recorded(tmp_path_factory):
    """A log of two fits (so epochs restart and steps go on), every 2nd step, of a relu network
    with every export switched on. Made for each test (2 s): a fixture shared by several tests
    would credit its calls to the first test alone, and mutation testing would then not run the
    others against a change in the code the fixture runs."""
    folder = tmp_path_factory.mktemp("recorded")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(22, 3)).astype("float32")
    y = (X @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(22, 2))).astype("float32")
    model = compile_model(dense_model([3, 4, 2], ["relu", "linear"], seed=5), "adam", learning_rate=0.05)
    logger = GradientLogger(every_n_steps=2, record="full", snapshots=True, tensorboard_dir=folder / "tb")
    model.fit(X, y, epochs=3, batch_size=5, shuffle=False, callbacks=[logger], verbose=0)  # steps 0..14
    model.fit(X, y, epochs=1, batch_size=5, shuffle=False, callbacks=[logger], verbose=0)  # steps 15..19
    return logger, folder


def test_the_recorded_log_is_what_the_exports_are_checked_on(recorded):
    logger, _ = recorded
    assert logger.steps.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert logger.epochs.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 0, 0]  # 5 steps per epoch; the second fit restarts
    assert len(set(logger.losses.tolist())) == len(logger)  # a different loss on every row


def test_to_csv_every_cell_of_a_recorded_log(recorded, tmp_path):
    logger, _ = recorded
    logger.to_csv(tmp_path / "log.csv")
    check_csv_against_log(tmp_path / "log.csv", logger)


def test_to_npz_round_trip_of_a_recorded_log(recorded, tmp_path):
    logger, _ = recorded
    logger.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    assert_same_log(back, logger)
    assert back.health().dead_units == logger.health().dead_units
    assert str(back.health()) == str(logger.health())


def test_a_streamed_folder_loads_as_the_same_log(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 2)).astype("float32")
    y = X.sum(axis=1, keepdims=True)
    logs = []
    for path in (None, tmp_path / "grads"):
        model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=0.1)
        logger = GradientLogger(every_n_steps=3, record="full", path=path)
        model.fit(X, y, epochs=3, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)
        logs.append(logger)
    back = load_gradient_log(tmp_path / "grads")
    assert back.steps.tolist() == [0, 3, 6]
    assert_same_log(back, logs[1])
    for a, b in zip(back.gradients(), logs[0].gradients(), strict=True):  # the same as held in memory
        np.testing.assert_array_equal(a, b)


def _tensorboard_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(str(folder / "events.out.tfevents.*"))
    assert len(files) == 1
    accumulator = EventAccumulator(files[0], size_guidance={"tensors": 0})  # 0: keep every event
    accumulator.Reload()
    return accumulator


def _series(accumulator, tag):
    """`(steps, values)` of one tag: int array `(n,)` and array `(n, ...)`."""
    events = accumulator.Tensors(tag)
    return np.array([e.step for e in events]), np.array([tf.make_ndarray(e.tensor_proto) for e in events])


def tensorboard_buckets(data, bucket_count=30):
    """TensorBoard's histogram buckets `(bucket_count, 3)` (left edge, right edge, count), as its
    `tensorboard/plugins/histogram/summary_v2.py` defines them: equal widths from min to max, the
    maximum counted in the last bucket, all entries in the last bucket when they are all equal."""
    data = np.asarray(data, dtype=np.float64).ravel()
    low, high = data.min(), data.max()
    if high == low:
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        return np.stack([np.full(bucket_count, low), np.full(bucket_count, low), counts], axis=1)
    index = np.minimum(np.floor((data - low) / ((high - low) / bucket_count)).astype(int), bucket_count - 1)
    edges = np.linspace(low, high, bucket_count + 1)
    return np.stack([edges[:-1], edges[1:], np.bincount(index, minlength=bucket_count)], axis=1)


def test_tensorboard_scalars_and_histograms_are_the_logged_values(recorded):
    logger, folder = recorded
    events = _tensorboard_events(folder / "tb")
    tags = set(events.Tags()["tensors"])
    per_variable = {f"{kind}/{n}" for n in logger.names for kind in ("gradient_norm", "gradients", "applied_norm")}
    assert {"loss", "global_gradient_norm", "loss_scale", "applied"} | per_variable <= tags
    assert tags <= {"loss", "global_gradient_norm", "loss_scale", "applied", "learning_rate", "clipped"} | per_variable
    steps, losses = _series(events, "loss")
    np.testing.assert_array_equal(steps, logger.steps)
    np.testing.assert_array_equal(losses, logger.losses.astype(np.float32))  # scalars are stored in float32
    for tag, column in (("global_gradient_norm", logger.global_norms), ("loss_scale", logger.loss_scales), ("applied", logger.applied)):
        steps, values = _series(events, tag)
        np.testing.assert_array_equal(steps, logger.steps)
        np.testing.assert_array_equal(values, np.asarray(column, np.float64).astype(np.float32), err_msg=tag)
    norms = logger.stat("norm")
    for j, (name, grads) in enumerate(zip(logger.names, logger.gradients(), strict=True)):
        steps, values = _series(events, f"gradient_norm/{name}")
        np.testing.assert_array_equal(steps, logger.steps)
        np.testing.assert_array_equal(values, norms[:, j].astype(np.float32))
        steps, values = _series(events, f"applied_norm/{name}")
        np.testing.assert_array_equal(values, logger.stat("applied_norm")[:, j].astype(np.float32))
        steps, histograms = _series(events, f"gradients/{name}")
        np.testing.assert_array_equal(steps, logger.steps)
        assert histograms.shape == (len(logger), 30, 3)
        for r in range(len(logger)):
            expected = tensorboard_buckets(grads[r])
            assert histograms[r][:, 2].sum() == grads[r].size
            np.testing.assert_array_equal(histograms[r][:, 2], expected[:, 2], err_msg=f"{name} step {logger.steps[r]}")
            np.testing.assert_allclose(histograms[r][:, :2], expected[:, :2], rtol=1e-12, atol=0)  # edges: linspace in float64
