"""`GradientLog` on its own (NumPy only): its accessors, exports, loading and `health()`.

The logs here are made by hand, as a `GradientLogger` fills them (rows appended in chunks), with
a different value in every cell: steps that are not row numbers, epochs that are not steps, a
different loss per row, statistics drawn at random, chunks of 3, 1 and 3 rows. So a column
written from the wrong source, a shifted row or a lost chunk changes some compared value.
Everything is compared exactly: `to_csv` writes `repr(float)`, which reads back to the same
float, and `.npz` stores the arrays as they are. `test_exports.py` does the same for logs
recorded from a real `fit`, and decodes the TensorBoard files.
"""

import csv
import json
import warnings

import numpy as np
import pytest

from kerasbp.logger.log import COLUMNS, CSV_ROW_COLUMNS, FOLDER_LOG, STATS, GradientLog, gradient_file, load_gradient_log

NAMES = ["net/hidden/kernel", "net/hidden/bias", "net/mid/kernel", "net/out/kernel"]
LAYERS = ["hidden", "hidden", "mid", "out"]
ACTIVATIONS = ["relu", "relu", "tanh", "linear"]
SHAPES = [(2, 3), (3,), (3, 2), (2, 1)]
OPTIMIZER_NAMES = ["adam/iteration", "adam/learning_rate", "adam/m_0", "adam/m_1", "adam/m_2", "adam/m_3"]
STEPS = [3, 6, 9, 12, 15, 18, 21]
EPOCHS = [0, 1, 1, 2, 3, 3, 4]
CHUNKS = (3, 1, 3)  # rows per append


def synthetic_log(record="full", snapshots=True, every_n_steps=3, grad_dtype=np.float32):
    """A log of 7 rows in three chunks, as a `GradientLogger` appends them."""
    rng = np.random.default_rng(0)
    log = GradientLog()
    log.names, log.layers, log.activations, log.shapes = list(NAMES), list(LAYERS), list(ACTIVATIONS), list(SHAPES)
    log.record, log.every_n_steps = record, every_n_steps
    log._grads = [[] for _ in NAMES]
    log._alive = [np.array([True, False, True]), None, None, None]
    if snapshots:
        log.optimizer_variable_names = list(OPTIMIZER_NAMES)
        log._weights = [[] for _ in NAMES]
        log._optimizer_state = [[] for _ in OPTIMIZER_NAMES]
    start = 0
    for n in CHUNKS:
        rows = slice(start, start + n)
        start += n
        stats = rng.normal(size=(n, len(NAMES), len(STATS)))
        steps = np.array(STEPS[rows])
        columns = {key: default(steps) for key, (_, default) in COLUMNS.items() if default is not None}
        log._append(stats, steps=steps, epochs=np.array(EPOCHS[rows]), losses=rng.uniform(0.1, 2.0, n), **columns)
        for j, shape in enumerate(SHAPES):
            log._grads[j].append(rng.normal(size=(n, *shape)).astype(grad_dtype))
            if snapshots:
                log._weights[j].append(rng.normal(size=(n, *shape)).astype(np.float32))
        if snapshots:
            for k, shape in enumerate([(), (), *SHAPES]):
                log._optimizer_state[k].append(rng.normal(size=(n, *shape)).astype(np.float32))
    return log


def test_a_new_log_has_the_documented_defaults():
    log = GradientLog()
    assert log.record == "stats" and log.every_n_steps == 1 and log.optimizer_variable_names == []
    with pytest.raises(ValueError, match="snapshots=True"):
        log.weights()
    with pytest.raises(ValueError, match="snapshots=True"):
        log.optimizer_state()
    with pytest.raises(ValueError, match='record="full"'):
        log.gradients()


def test_accessors_join_the_chunks_in_order():
    log = synthetic_log()
    assert log.steps.tolist() == STEPS and log.steps.dtype == np.int64
    assert log.epochs.tolist() == EPOCHS
    assert len(log) == 7 and log.losses.shape == (7,)
    a = log.stats_array()
    assert a.shape == (7, 4, len(STATS))
    np.testing.assert_array_equal(a, np.concatenate(log._chunks["stats"]))
    np.testing.assert_array_equal(log.losses, np.concatenate(log._chunks["losses"]))
    for i, stat in enumerate(STATS):
        np.testing.assert_array_equal(log.stat(stat), a[:, :, i])
        for j, name in enumerate(NAMES):
            np.testing.assert_array_equal(log.stats[name][stat], a[:, j, i])
    last = log.last_gradients()
    for j, g in enumerate(log.gradients()):
        assert g.shape == (7, *SHAPES[j])
        np.testing.assert_array_equal(g, np.concatenate(log._grads[j]))
        np.testing.assert_array_equal(last[j], g[-1])
    for j, w in enumerate(log.weights()):
        np.testing.assert_array_equal(w, np.concatenate(log._weights[j]))
    for k, s in enumerate(log.optimizer_state()):
        np.testing.assert_array_equal(s, np.concatenate(log._optimizer_state[k]))
    with pytest.raises(ValueError, match=r"`name` must be one of \['norm'"):
        log.stat("median")


def test_last_gradients_of_a_log_streamed_to_files():
    # A streaming GradientLogger keeps no chunks in memory (`_grads` holds empty lists) and reads
    # its gradients from files through `_grad_array`.
    held = synthetic_log()
    arrays = held.gradients()
    streamed = synthetic_log()
    streamed._grads = [[] for _ in NAMES]
    streamed._grad_array = lambda j: arrays[j]
    for got, g in zip(streamed.last_gradients(), arrays, strict=True):
        np.testing.assert_array_equal(got, g[-1])


def test_an_empty_log_has_empty_arrays_of_the_right_shapes_and_dtypes():
    log = GradientLog()
    log.names, log.layers, log.activations, log.shapes, log.record = list(NAMES), list(LAYERS), list(ACTIVATIONS), list(SHAPES), "full"
    log._alive = [np.zeros(3, bool), None, None, None]
    assert len(log) == 0
    assert log.steps.shape == log.epochs.shape == log.losses.shape == (0,)
    assert log.steps.dtype == log.epochs.dtype == np.int64 and log.losses.dtype == np.float64
    assert log.stats_array().shape == (0, 4, len(STATS)) and log.stats_array().dtype == np.float64
    assert [(g.shape, g.dtype) for g in log.gradients()] == [((0, *s), np.float32) for s in SHAPES]
    with pytest.raises(ValueError, match="at least one step"):
        log.last_gradients()
    log.record = "stats"
    with pytest.raises(ValueError, match='record="full"'):
        log.last_gradients()
    log.optimizer_variable_names = ["sgd/iteration", "sgd/learning_rate"]
    log._weights, log._optimizer_state = [[] for _ in NAMES], [[], []]
    assert [(w.shape, w.dtype) for w in log.weights()] == [((0, *s), np.float32) for s in SHAPES]
    assert [s.shape for s in log.optimizer_state()] == [(0,), (0,)]
    health = log.health()  # nothing logged: nothing flagged, no unit called dead
    assert health.ok and health.dead_units == {} and np.isnan(health.figures.get("max_norm", np.nan))
    assert health.figures["n_logged"] == 0 and "first_last_ratio" not in health.figures


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def check_csv_against_log(path, log):
    """Every cell of `to_csv`'s file against the log's own arrays, exactly."""
    rows = read_csv(path)
    assert rows[0] == [*CSV_ROW_COLUMNS, "variable", "layer", *STATS]
    body = rows[1:]
    n_vars, k0 = len(log.names), len(CSV_ROW_COLUMNS)
    assert len(body) == len(log) * n_vars
    stats = log.stats_array()
    per_row = {  # each row column against the log's own array
        "step": log.steps, "epoch": log.epochs, "iterations": log.iterations, "loss": log.losses,
        "applied": log.applied, "skipped": log.skipped, "clipped": log.clipped,
        "learning_rate": log.learning_rates, "loss_scale": log.loss_scales, "global_norm": log.global_norms,
    }
    for k, row in enumerate(body):
        r, j = divmod(k, n_vars)  # one row per logged step and variable, variables inner
        assert len(row) == k0 + 2 + len(STATS)
        for c, name in enumerate(CSV_ROW_COLUMNS):
            value = per_row[name][r]
            if value.dtype == bool:
                assert row[c] in ("True", "False", "1", "0") and (row[c] in ("True", "1")) == bool(value), (k, name)
            else:
                np.testing.assert_array_equal(float(row[c]), value, err_msg=f"row {k}, {name}")
        assert row[k0] == log.names[j] and row[k0 + 1] == log.layers[j]
        np.testing.assert_array_equal([float(v) for v in row[k0 + 2 :]], stats[r, j], err_msg=f"row {k}")


def test_to_csv_every_cell(tmp_path):
    log = synthetic_log()
    log.layers[2] = "mélange"  # written as UTF-8
    log.stats_array()[1, 2, STATS.index("update_ratio")] = np.inf  # written and read back as inf
    log.stats_array()[2, 1, STATS.index("norm")] = np.nan
    log.to_csv(tmp_path / "log.csv")
    check_csv_against_log(tmp_path / "log.csv", log)
    rows = read_csv(tmp_path / "log.csv")
    k0 = len(CSV_ROW_COLUMNS) + 2
    assert rows[1 + 4 * 1 + 2][k0 + STATS.index("update_ratio")] == "inf"
    assert rows[1 + 4 * 2 + 1][k0 + STATS.index("norm")] == "nan"
    assert (tmp_path / "log.csv").read_bytes().count(b"\r\n") == 1 + 7 * 4  # csv's own line ends, not doubled


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


@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_a_streamed_folder_loads_with_memory_mapped_gradients(tmp_path, grad_dtype):
    # What a GradientLogger(path=folder) leaves: one raw file of rows per variable, and the rest
    # of the log (with the gradients' dtype) in FOLDER_LOG.
    log = synthetic_log(grad_dtype=grad_dtype)
    folder = tmp_path / "streamed"
    folder.mkdir()
    for j, g in enumerate(log.gradients()):
        assert gradient_file(folder, j) == str(folder / f"grad_{j}.bin")
        with open(folder / f"grad_{j}.bin", "wb") as f:
            f.write(np.ascontiguousarray(g).tobytes())  # rows of the variable's shape, C order
    np.savez(folder / FOLDER_LOG, **log._arrays(gradients=False, grad_dtype=np.dtype(grad_dtype).name))
    back = load_gradient_log(folder)
    assert_same_log(back, log)
    assert all(isinstance(g, np.memmap) and g.dtype == grad_dtype and not g.flags.writeable for g in back.gradients())
    with pytest.raises(FileNotFoundError, match="folder without a kerasbp gradient log"):
        load_gradient_log(tmp_path)
    # an empty streamed log: no rows, no files to map
    empty = GradientLog()
    empty.names, empty.layers, empty.activations, empty.shapes, empty.record = list(NAMES), list(LAYERS), list(ACTIVATIONS), list(SHAPES), "full"
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "empty" / FOLDER_LOG, **empty._arrays(gradients=False, grad_dtype="float32"))
    assert [g.shape for g in load_gradient_log(tmp_path / "empty").gradients()] == [(0, *s) for s in SHAPES]


def test_a_file_with_pickled_objects_is_not_unpickled(tmp_path):
    np.savez(tmp_path / "evil.npz", meta=np.array([{"names": []}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_gradient_log(tmp_path / "evil.npz")


# ---------------------------------------------------------------- health


def health_log():
    """A log whose statistics say: the first kernel's gradient is 1e-6 of the last kernel's
    (vanishing), a gradient norm of 5000 at step 15 (exploding), one NaN in the last kernel at
    step 12 (non-finite), and unit 1 of the relu kernel never had a gradient (dead)."""
    log = synthetic_log()
    a = log.stats_array()
    a[:, :, STATS.index("nonfinite")] = 0
    a[:, :, STATS.index("norm")] = [[2e-6, 1.0, 3.0, 2.0]] * 7  # first kernel / last kernel = 1e-6
    a[3, 3, STATS.index("nonfinite")] = 1  # step 12, variable net/out/kernel
    a[4, 1, STATS.index("norm")] = 5e3
    return log, a


def test_health_flags_and_its_report():
    log, a = health_log()
    health = log.health()
    assert health.vanishing and health.figures["first_last_ratio"] == pytest.approx(1e-6, rel=1e-12)
    assert health.figures["first_kernel"] == NAMES[0] and health.figures["last_kernel"] == NAMES[3]
    assert health.nonfinite and health.figures["first_nonfinite_step"] == 12
    assert health.figures["first_nonfinite_variable"] == NAMES[3]
    # The global norm of step 15, sqrt(2e-6^2 + 5e3^2 + 3^2 + 2^2), is 1336 times the median of
    # the first tenth of the run (step 3's sqrt(4e-12 + 1 + 9 + 4) = 3.742): exploding.
    assert health.exploding and health.figures["max_norm"] == pytest.approx(np.sqrt(4e-12 + 25e6 + 13), rel=1e-12)
    assert health.figures["growth"] == pytest.approx(np.sqrt(4e-12 + 25e6 + 13) / np.sqrt(4e-12 + 14), rel=1e-12)
    assert health.dead_units == {NAMES[0]: [1]} and health.figures["units"] == {NAMES[0]: 3}
    assert not health.ok
    lines = str(health).splitlines()
    assert lines[0] == "gradient health over 7 logged steps: FLAGGED"
    assert lines[1] == "  VANISHING - median |grad| of first kernel 'net/hidden/kernel' / last kernel 'net/out/kernel' = 1e-06 (threshold 0.001)"
    assert lines[2].startswith("  EXPLODING - global gradient norm peaked at 5e+03 ")
    assert "  NON-FINITE - first at step 12, variable 'net/out/kernel'" in lines
    assert lines[-1] == "  DEAD UNITS in 'net/hidden/kernel': 1 of 3 (units [1])"
    assert repr(health) == str(health)


def test_health_of_a_healthy_log_and_its_report():
    log, a = health_log()
    a[3, 3, STATS.index("nonfinite")] = 0
    a[4, 1, STATS.index("norm")] = 1.0
    a[:, 0, STATS.index("norm")] = 0.5  # first / last kernel = 0.25
    log._alive[0][:] = True
    health = log.health()
    assert health.ok and not health.exploding and health.figures["max_norm"] == pytest.approx(np.sqrt(0.25 + 1 + 9 + 4), rel=1e-12)
    assert health.figures["first_last_ratio"] == 0.25
    lines = str(health).splitlines()
    assert lines[0] == "gradient health over 7 logged steps: ok"
    assert lines[1] == "  vanishing: no - median |grad| of first kernel 'net/hidden/kernel' / last kernel 'net/out/kernel' = 0.25 (threshold 0.001)"
    assert lines[2].startswith("  exploding: no - global gradient norm peaked at 3.77 ")
    assert lines[3:] == ["  non-finite: none", "  dead relu units: none"]


def test_health_thresholds_are_strict_and_have_the_documented_defaults():
    log, a = health_log()
    a[:, :, STATS.index("nonfinite")] = 0
    a[:, :, STATS.index("norm")] = [[0.002, 1.0, 3.0, 2.0]] * 7  # ratio 1e-3, on the threshold
    a[4, 1, STATS.index("norm")] = 1000.5  # above the default 1e3, below 1001
    health = log.health()
    assert not health.vanishing and health.figures["first_last_ratio"] == pytest.approx(1e-3, rel=1e-12)
    peak = np.sqrt(0.002**2 + 1000.5**2 + 9 + 4)  # step 15's global norm, 267x the early median
    assert health.exploding and not health.nonfinite  # exploding by its growth alone
    assert not log.health(exploding_growth=1e6).exploding  # no absolute threshold by default
    assert log.health(exploding_growth=1e6, exploding_norm=1000.5).exploding  # 1000.5065 > 1000.5
    assert not log.health(exploding_growth=1e6, exploding_norm=peak).exploding  # on the threshold: not above it
    assert log.health(vanishing_ratio=0.0011).vanishing
    with pytest.raises(ValueError, match="`vanishing_ratio` must be a positive finite number"):
        log.health(vanishing_ratio=0)
    with pytest.raises(ValueError, match="`exploding_norm` must be a positive finite number"):
        log.health(exploding_norm=-1)
    with pytest.raises(ValueError, match="`exploding_growth` must be a positive finite number"):
        log.health(exploding_growth=0)


def test_health_names_the_loss_and_divides_by_zero_norms_quietly():
    log, a = health_log()
    a[:, :, STATS.index("nonfinite")] = 0
    a[4, 1, STATS.index("norm")] = 1.0
    a[:2, 3, STATS.index("norm")] = 0.0  # last kernel's gradient exactly 0: ratios inf and NaN
    a[0, 0, STATS.index("norm")] = 0.0
    log.losses[1] = np.inf  # a non-finite loss with finite gradients names the loss
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        health = log.health()
    assert health.nonfinite and not health.exploding and health.figures["first_nonfinite_step"] == 6  # NaN/Inf alone is not exploding
    assert health.figures["first_nonfinite_variable"] is None
    assert "  NON-FINITE - first at step 6, the loss (gradients finite)" in str(health).splitlines()
    assert health.figures["first_last_ratio"] == pytest.approx(1e-6, rel=1e-12)  # the median skips them


def test_vanishing_needs_two_kernels_and_compares_the_first_with_the_last():
    log, a = health_log()
    # two kernels: the mid kernel becomes a bias-like 1-D variable
    two = synthetic_log()
    two.shapes = [(2, 3), (3,), (6,), (2, 1)]
    two.stats_array()[:] = a
    health = two.health()
    assert health.vanishing and health.figures["last_kernel"] == NAMES[3]
    assert health.figures["first_last_ratio"] == pytest.approx(1e-6, rel=1e-12)
    one = synthetic_log()
    one.shapes = [(2, 3), (3,), (6,), (2,)]
    one.stats_array()[:] = a
    health = one.health()
    assert health.vanishing is False and "first_last_ratio" not in health.figures
