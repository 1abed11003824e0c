"""`GradientLog` on its own (NumPy only): its accessors and exports, column by column and field by field.

The logs here are made by hand, with a different value in every cell (steps that are not row
numbers, epochs that are not steps, a different loss per row, statistics drawn at random), so a
column written from the wrong source, a shifted row or a lost chunk changes some compared value.
Everything is compared exactly: `to_csv` writes `repr(float)`, which reads back to the same
float, and `.npz` stores the arrays as they are. `test_exports.py` does the same for logs
recorded from a real `fit`, and decodes the TensorBoard files.
"""

import csv
import json

import numpy as np
import pytest

from kerasbp.logger.log import STATS, GradientLog, load_gradient_log

NAMES = ["net/hidden/kernel", "net/hidden/bias", "net/out/kernel"]
LAYERS = ["hidden", "hidden", "out"]
SHAPES = [(2, 3), (3,), (3, 1)]
OPTIMIZER_NAMES = ["adam/iteration", "adam/learning_rate", "adam/m_0", "adam/m_1", "adam/m_2"]


def synthetic_log(record="full", snapshots=True, every_n_steps=3):
    """A log of 5 rows in two chunks, as a `GradientLogger` appends them."""
    rng = np.random.default_rng(0)
    log = GradientLog()
    log.names, log.layers, log.activations, log.shapes = list(NAMES), list(LAYERS), ["relu", "relu", "linear"], list(SHAPES)
    log.record, log.every_n_steps = record, every_n_steps
    chunks = [np.array([3, 6, 9]), np.array([12, 15])]
    epochs = [np.array([0, 1, 1]), np.array([2, 3])]
    log._grads = [[] for _ in NAMES]
    log._alive = [np.array([True, False, True]), None, None]
    if snapshots:
        log.optimizer_variable_names = list(OPTIMIZER_NAMES)
        log._weights = [[] for _ in NAMES]
        log._optimizer_state = [[] for _ in OPTIMIZER_NAMES]
    for steps, ep in zip(chunks, epochs, strict=True):
        n = len(steps)
        losses = rng.uniform(0.1, 2.0, n)
        stats = rng.normal(size=(n, len(NAMES), len(STATS)))
        log._append(steps, ep, losses, stats)
        for j, shape in enumerate(SHAPES):
            log._grads[j].append(rng.normal(size=(n, *shape)).astype(np.float32))
            if snapshots:
                log._weights[j].append(rng.normal(size=(n, *shape)).astype(np.float32))
        if snapshots:
            state_shapes = [(), (), *SHAPES]
            for k, shape in enumerate(state_shapes):
                log._optimizer_state[k].append(rng.normal(size=(n, *shape)).astype(np.float32))
    return log


def test_accessors_join_the_chunks_in_order():
    log = synthetic_log()
    assert log.steps.tolist() == [3, 6, 9, 12, 15] and log.steps.dtype == np.int64
    assert log.epochs.tolist() == [0, 1, 1, 2, 3]
    assert len(log) == 5 and log.losses.shape == (5,)
    a = log.stats_array()
    assert a.shape == (5, 3, len(STATS))
    np.testing.assert_array_equal(a, np.concatenate(log._chunks["stats"]))
    np.testing.assert_array_equal(log.losses, np.concatenate(log._chunks["losses"]))
    for i, stat in enumerate(STATS):
        np.testing.assert_array_equal(log.stat(stat), a[:, :, i])
        for j, name in enumerate(NAMES):
            np.testing.assert_array_equal(log.stats[name][stat], a[:, j, i])
    for j, g in enumerate(log.gradients()):
        assert g.shape == (5, *SHAPES[j])
        np.testing.assert_array_equal(g, np.concatenate(log._grads[j]))
        np.testing.assert_array_equal(log.last_gradients()[j], g[-1])
    for j, w in enumerate(log.weights()):
        np.testing.assert_array_equal(w, np.concatenate(log._weights[j]))
    for k, s in enumerate(log.optimizer_state()):
        np.testing.assert_array_equal(s, np.concatenate(log._optimizer_state[k]))
    with pytest.raises(ValueError, match="one of"):
        log.stat("median")


def test_an_empty_log_has_empty_arrays_of_the_right_shapes():
    log = GradientLog()
    log.names, log.shapes, log.record = list(NAMES), list(SHAPES), "full"
    assert len(log) == 0
    assert log.steps.shape == log.epochs.shape == log.losses.shape == (0,)
    assert log.stats_array().shape == (0, 3, len(STATS))
    assert [g.shape for g in log.gradients()] == [(0, *s) for s in SHAPES]
    with pytest.raises(ValueError, match="at least one step"):
        log.last_gradients()
    with pytest.raises(ValueError, match="snapshots=True"):
        log.weights()
    log.record = "stats"
    with pytest.raises(ValueError, match='record="full"'):
        log.last_gradients()


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def check_csv_against_log(path, log):
    """Every cell of `to_csv`'s file against the log's own arrays, exactly."""
    rows = read_csv(path)
    assert rows[0] == ["step", "epoch", "loss", "variable", "layer", *STATS]
    body = rows[1:]
    n_vars = len(log.names)
    assert len(body) == len(log) * n_vars
    stats = log.stats_array()
    for k, row in enumerate(body):
        r, j = divmod(k, n_vars)  # one row per logged step and variable, variables inner
        assert len(row) == 5 + len(STATS)
        assert int(row[0]) == log.steps[r], (k, "step")
        assert int(row[1]) == log.epochs[r], (k, "epoch")
        assert float(row[2]) == log.losses[r], (k, "loss")
        assert row[3] == log.names[j] and row[4] == log.layers[j]
        np.testing.assert_array_equal([float(v) for v in row[5:]], stats[r, j], err_msg=f"row {k}")


def test_to_csv_every_cell(tmp_path):
    log = synthetic_log()
    log.stats_array()[1, 2, STATS.index("update_ratio")] = np.inf  # written and read back as inf
    log.stats_array()[2, 1, STATS.index("norm")] = np.nan
    log.to_csv(tmp_path / "log.csv")
    check_csv_against_log(tmp_path / "log.csv", log)
    rows = read_csv(tmp_path / "log.csv")
    assert rows[1 + 3 * 1 + 2][5 + STATS.index("update_ratio")] == "inf"
    assert rows[1 + 3 * 2 + 1][5 + STATS.index("norm")] == "nan"


def assert_same_log(back, log):
    """Every field of two logs equal (arrays exactly, with their dtypes)."""
    assert back.names == log.names and back.layers == log.layers and back.activations == log.activations
    assert back.shapes == log.shapes and all(isinstance(s, tuple) for s in back.shapes)
    assert back.record == log.record and back.every_n_steps == log.every_n_steps
    assert back.optimizer_variable_names == log.optimizer_variable_names
    for field in ("steps", "epochs", "losses"):
        a, b = getattr(back, field), getattr(log, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    np.testing.assert_array_equal(back.stats_array(), log.stats_array())
    assert len(back._alive) == len(log._alive)
    for a, b in zip(back._alive, log._alive, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    if log.record == "full":
        for a, b in zip(back.gradients(), log.gradients(), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    if log._weights is not None:
        for a, b in zip(back.weights(), log.weights(), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert len(back.optimizer_state()) == len(log.optimizer_state())
        for a, b in zip(back.optimizer_state(), log.optimizer_state(), strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        with pytest.raises(ValueError, match="snapshots=True"):
            back.weights()


@pytest.mark.parametrize(
    "record, snapshots", [("full", True), ("full", False), ("stats", False)], ids=["full-snapshots", "full", "stats"]
)
def test_to_npz_and_load_round_trip_every_field(tmp_path, record, snapshots):
    log = synthetic_log(record=record, snapshots=snapshots, every_n_steps=3)
    log.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    assert_same_log(back, log)
    with np.load(tmp_path / "log.npz") as data:
        meta = json.loads(str(data["meta"]))
        assert meta["stats"] == list(STATS)
        assert ("grad_0" in data) == (record == "full")
    if record == "stats":
        with pytest.raises(ValueError, match='record="full"'):
            back.gradients()
    # and saving what was loaded gives the same log again
    back.to_npz(tmp_path / "again.npz")
    assert_same_log(load_gradient_log(tmp_path / "again.npz"), log)
    assert str(back.health()) == str(log.health())


def test_health_reads_the_named_columns():
    log = synthetic_log()
    a = log.stats_array()
    a[:, :, STATS.index("nonfinite")] = 0
    a[:, :, STATS.index("norm")] = [[1e-6, 1.0, 1.0]] * 5  # first kernel / last kernel = 1e-6
    a[3, 2, STATS.index("nonfinite")] = 2  # step 12, variable net/out/kernel
    a[4, 0, STATS.index("norm")] = 5e3
    health = log.health()
    assert health.vanishing and health.figures["first_last_ratio"] == pytest.approx(1e-6, rel=1e-12)
    assert health.figures["first_kernel"] == NAMES[0] and health.figures["last_kernel"] == NAMES[2]
    assert health.nonfinite and health.figures["first_nonfinite_step"] == 12
    assert health.figures["first_nonfinite_variable"] == NAMES[2]
    assert health.exploding and health.figures["max_norm"] == 5e3
    assert health.dead_units == {NAMES[0]: [1]} and health.figures["units"] == {NAMES[0]: 3}
    assert not health.ok
    a[3, 2, STATS.index("nonfinite")] = 0
    a[4, 0, STATS.index("norm")] = 1.0
    a[:, 0, STATS.index("norm")] = 0.5
    log._alive[0][:] = True
    healthy = log.health()
    assert healthy.ok and not healthy.exploding and healthy.figures["max_norm"] == 1.0
    assert healthy.figures["first_last_ratio"] == 0.5
    log.losses[1] = np.inf  # a non-finite loss with finite gradients names the loss
    flagged = log.health()
    assert flagged.nonfinite and flagged.figures["first_nonfinite_step"] == 6
    assert flagged.figures["first_nonfinite_variable"] is None
