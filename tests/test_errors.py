"""Bad input, divergence, interruption and reproducibility (the cases seen in the wild)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kerasbp as kb
from kerasbp.checks import check_xy
from kerasbp import cli, jobs
from kerasbp.cli import main_linear
from kerasbp.jobs import Diverged, run_linear

ROOT = Path(__file__).resolve().parents[1]


def test_one_dimensional_targets_never_broadcast():
    # Targets [1, 2, 3, 4] of shape (4,) with perfect predictions: the loss is 0.0, not the 2.5
    # of an (n, n) broadcast of (4,) against (4, 1).
    X = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.mean((y - X[:, None]) ** 2) == 2.5  # the bug this guards against
    model = kb.compile_model(kb.linear_model(seed=0), "sgd", learning_rate=1e-9)
    model.set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
    history = kb.train(model, X, y, epochs=1, batch_size=4)
    assert history.history["loss"] == [0.0]


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.zeros((0, 1)), np.zeros((0, 1)), "`X` must not be empty"),
        (np.zeros((4, 1)), np.zeros((3, 1)), "X with 4 rows .* y with 3 rows"),
        (np.array([[1.0], [np.nan], [3.0], [4.0]]), np.zeros(4), "`X` must be finite. Received nan at row 1, column 0"),
        (np.zeros((4, 1)), np.array([0.0, 0.0, np.inf, 0.0]), "`y` must be finite. Received inf at row 2, column 0"),
        (np.zeros((4, 2)), np.zeros(4), "`X` has 2 features, but the model expects 1"),
    ],
    ids=["empty", "lengths", "nan-X", "inf-y", "width"],
)
def test_train_refuses_bad_arrays(X, y, match):
    # Keras itself returns an empty History with only a warning for empty arrays; kerasbp raises.
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    with pytest.raises(ValueError, match=match):
        kb.train(model, X, y, epochs=1)


def test_train_converts_integers_and_booleans():
    model = kb.compile_model(kb.xor_model(seed=0), "sgd")
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # int64
    y = np.array([False, True, True, False])
    history = kb.train(model, X, y, epochs=2, batch_size=4)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    with pytest.raises(TypeError, match="`y` must hold numbers"):
        kb.train(model, X, np.array(["a", "b", "c", "d"]), epochs=1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "`epochs` must be a positive integer. Received: epochs=0"),
        ({"epochs": 1.5}, TypeError, "epochs=1.5"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"epochs_per_call": -1}, ValueError, "epochs_per_call=-1"),
        ({"verbose": 5}, ValueError, "`verbose` must be 0, 1 or 2"),
    ],
    ids=["epochs", "float-epochs", "batch", "epochs-per-call", "verbose"],
)
def test_train_refuses_bad_hyperparameters(kwargs, error, match):
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    with pytest.raises(error, match=match):
        kb.train(model, np.zeros((4, 1)), np.zeros(4), **{"epochs": 1, **kwargs})


def test_train_refuses_uncompiled_models():
    with pytest.raises(ValueError, match="must be compiled"):
        kb.train(kb.linear_model(seed=0), np.zeros((4, 1)), np.zeros(4))


def unscaled_csv(tmp_path):
    # Inputs in the hundreds: x uniform in [0, 300], y = 0.05 x + 7 + noise(0.1).
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 300, 100)
    y = 0.05 * x + 7 + rng.normal(0, 0.1, 100)
    path = tmp_path / "unscaled.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="x,y", comments="")
    return path


def test_divergence_stops_the_script_and_suggests_standardize(tmp_path, capsys):
    path = unscaled_csv(tmp_path)
    args = ["--csv", str(path), "--x-columns", "x", "--y-column", "y", "--learning-rate", "0.01", "--batch-size", "1", "--seed", "0"]
    assert main_linear(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "training diverged" in err and "--standardize" in err and "smaller --learning-rate" in err
    # the first non-finite step is named, and it is early: SGD at 0.01 on x ~ 150 blows up at once
    with pytest.raises(Diverged) as info:
        run_linear(csv=path, x_columns="x", y_column="y", learning_rate=0.01, batch_size=1, seed=0)
    assert info.value.epoch == 0 and 0 < info.value.step < 100
    assert f"at epoch 1 (step {info.value.step})" in str(info.value)
    # the same data, standardized, trains to about the noise level
    r = run_linear(csv=path, x_columns="x", y_column="y", learning_rate=0.01, batch_size=1, seed=0, standardize=True)
    residual = r["intercept"] + r["coefficients"][0] * np.loadtxt(path, delimiter=",", skiprows=1)[:, 0]
    rmse = np.sqrt(np.mean((np.loadtxt(path, delimiter=",", skiprows=1)[:, 1] - residual) ** 2))
    assert rmse < 0.12  # noise standard deviation 0.1
    assert r["coefficients"][0] == pytest.approx(r["ols_coefficients"][0], rel=0.02)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_batch):
        super().__init__()
        self.at_batch = at_batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at_batch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["fit", "train"])
def test_interrupted_training_keeps_the_log_up_to_the_last_step(how):
    X, y = kb.linear_data()
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    logger = kb.GradientLogger(record="full")
    with pytest.raises(KeyboardInterrupt):
        if how == "fit":
            model.fit(X, y, epochs=3, batch_size=10, callbacks=[logger, Interrupt(4)], verbose=0)
        else:
            kb.train(model, X, y, epochs=3, batch_size=10, callbacks=[logger, Interrupt(9)], epochs_per_call=1)
    done = int(model.optimizer.iterations.numpy())
    assert done == (5 if how == "fit" else 10)
    assert logger.steps.tolist() == list(range(done))  # every completed step, nothing more
    assert len(logger.gradients()[0]) == done
    # and the model trains on afterwards without the logger's hooks
    logger.detach()
    model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert "apply" not in model.optimizer.__dict__


def test_interrupted_save_leaves_no_half_written_file(tmp_path, monkeypatch):
    X, y = kb.linear_data()
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    logger = kb.GradientLogger()
    model.fit(X, y, epochs=1, batch_size=10, callbacks=[logger], verbose=0)
    path = tmp_path / "log.npz"
    logger.to_npz(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    model.fit(X, y, epochs=1, batch_size=10, callbacks=[logger], verbose=0)
    with pytest.raises(KeyboardInterrupt):
        logger.to_npz(path)
    assert path.read_bytes() == before  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.npz"]  # no temporary file left
    assert len(kb.load_gradient_log(path).steps) == 10


REPRO = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import kerasbp as kb
    X, y = kb.xor_data()
    out = {}
    for how in ("fit", "train"):
        model = kb.compile_model(kb.xor_model(seed=7), "adam", learning_rate=0.05, loss="binary_crossentropy")
        initial = model.get_weights()
        logger = kb.GradientLogger(record="full")
        if how == "fit":
            history = model.fit(X, y, epochs=30, batch_size=3, shuffle=False, callbacks=[logger], verbose=0)
        else:
            history = kb.train(model, X, y, epochs=30, batch_size=3, callbacks=[logger])
        arrays = initial + model.get_weights() + [np.array(history.history["loss"])] + logger.gradients() + [logger.stats_array()]
        out[how] = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    json.dump(out, sys.stdout)
    """
)


def test_same_seed_same_bits_in_two_processes():
    runs = [subprocess.run([sys.executable, "-c", REPRO], capture_output=True, text=True, timeout=300, check=True) for _ in range(2)]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second  # bit-identical weights, losses and gradient logs


def acceptable(X, y, n_features):
    """Whether `check_xy(X, y, n_features=n_features)` must accept the pair: its documented
    contract, written out independently. Numbers (bool, int or float) only; 1-D becomes a column
    (for `X` only with one feature); 2-D after that; not empty; finite and within float32's
    range; as many rows in `X` as in `y`; `n_features` columns in `X` when given."""
    arrays = []
    for a in (X, y):
        try:
            a = np.asarray(a)
        except ValueError:  # ragged
            return False
        if a.dtype.kind not in "biuf":
            return False
        arrays.append(a)
    X, y = arrays
    if X.ndim == 1 and n_features is not None and n_features > 1:
        return False
    X, y = (a.reshape(-1, 1) if a.ndim == 1 else a for a in (X, y))
    for a in (X, y):
        if a.ndim != 2 or a.size == 0:
            return False
        values = a.astype(np.float64)
        if not np.all(np.isfinite(values)) or np.any(np.abs(values) > np.finfo(np.float32).max):
            return False
    return len(X) == len(y) and (n_features is None or X.shape[1] == n_features)


@st.composite
def valid_pairs(draw):
    """Pairs that must be accepted, so that the test below sees both verdicts."""
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float64, np.int64, np.bool_]))
    shape = (n, k) if k > 1 or draw(st.booleans()) else (n,)
    X = draw(hnp.arrays(dtype, shape, elements=st.floats(-1e6, 1e6) if dtype is np.float64 else None))
    y = draw(hnp.arrays(np.float64, (n,), elements=st.floats(-1e6, 1e6)))
    return X, y, draw(st.sampled_from([None, k]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.one_of(
        st.tuples(
            st.one_of(
                hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128, np.str_, object]), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
                st.lists(st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=2), st.none()), max_size=4),
            ),
            hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4), elements=st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), st.integers(1, 3)),
        ),
        valid_pairs(),
    )
)
def test_malformed_arrays_give_value_or_type_errors(case):
    # Every input gets the verdict the contract gives it (`acceptable`): refused ones with a
    # ValueError or TypeError, accepted ones normalized and unchanged in value.
    X, y, n_features = case
    try:
        Xc, yc = check_xy(X, y, n_features=n_features)
    except (ValueError, TypeError):
        event("refused")
        assert not acceptable(X, y, n_features), "a valid pair was refused"
        return
    event("accepted")
    assert acceptable(X, y, n_features), "an invalid pair was accepted"
    # anything accepted is 2-D, finite, float32, non-empty and of matching length and width
    assert Xc.ndim == yc.ndim == 2 and Xc.dtype == yc.dtype == np.float32
    assert len(Xc) == len(yc) > 0 and np.isfinite(Xc).all() and np.isfinite(yc).all()
    assert n_features is None or Xc.shape[1] == n_features
    np.testing.assert_array_equal(Xc, np.asarray(X).astype(np.float32).reshape(Xc.shape))
    np.testing.assert_array_equal(yc, np.asarray(y).astype(np.float32).reshape(yc.shape))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    activations=st.lists(st.sampled_from(["linear", "sigmoid", "tanh", "relu"]), min_size=3, max_size=3),
    n_samples=st.integers(1, 7),
    batch_size=st.integers(1, 8),
    optimizer=st.sampled_from(["sgd", "adam", "rmsprop"]),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 1000),
)
def test_twin_agrees_with_keras_on_random_small_networks(sizes, activations, n_samples, batch_size, optimizer, dtype, seed):
    # Any stack, any batch size (partial batches included), either dtype: every step agrees.
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, sizes[0]))
    y = rng.normal(size=(n_samples, sizes[-1]))
    model = kb.compile_model(kb.dense_model(sizes, activations[: len(sizes) - 1], seed=seed), optimizer, learning_rate=0.05)
    report = kb.compare(model, X, y, epochs=2, batch_size=batch_size, dtype=dtype)
    assert report.ok, report.summary()
    assert report.steps == 2 * -(-n_samples // batch_size)


def test_targets_wider_than_the_output_are_refused():
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    X = np.arange(4.0)
    with pytest.raises(ValueError, match=r"`y` has 2 columns, but the model has 1 output\(s\). Received: y of shape \(4, 2\)"):
        kb.train(model, X, np.stack([X, X], axis=1))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: kb.compile_model(kb.linear_model(seed=0), "sgd", learning_rate=1e300), ValueError, "representable in float32"),
        (lambda: kb.compile_model(kb.linear_model(seed=0), "sgd", learning_rate=1e-320), ValueError, "representable in float32"),
        (lambda: kb.compile_model(kb.linear_model(seed=0), "sgd", loss=None), ValueError, "Received: loss=None"),
        (lambda: kb.train(kb.compile_model(kb.linear_model(seed=0), "sgd"), [1.0], [1.0], jit_compile="no"), TypeError, "jit_compile"),
        (lambda: kb.xor_model(seed=2**70), ValueError, r"`seed` must be None or an integer in \[0, 2\*\*31\)"),
        (lambda: kb.GradientLogger(record="full", path=__file__), ValueError, "must be a folder"),
        (lambda: kb.GradientLogger(record="full", path="/no/such/parent/grads"), ValueError, "existing folder"),
        (lambda: kb.load_gradient_log(__file__), ValueError, "must be a .npz gradient log"),
    ],
    ids=["lr-overflow", "lr-underflow", "loss-none", "jit-type", "huge-seed", "path-is-file", "path-parent", "not-npz"],
)
def test_more_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_saved_files_follow_the_umask_and_folders_are_refused(tmp_path):
    X, y = kb.linear_data()
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    logger = kb.GradientLogger()
    model.fit(X, y, epochs=1, batch_size=50, callbacks=[logger], verbose=0)
    umask = os.umask(0o022)
    try:
        logger.to_csv(tmp_path / "log.csv")
    finally:
        os.umask(umask)
    assert (tmp_path / "log.csv").stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError, match="must be a file path in an existing folder"):
        logger.to_npz(tmp_path)


def test_a_script_saves_the_log_when_interrupted(tmp_path, monkeypatch):
    real_train = jobs.train

    def interrupted_train(model, X, y, callbacks=None, **kwargs):
        real_train(model, X, y, epochs=3, batch_size=kwargs["batch_size"], callbacks=callbacks)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train", interrupted_train)
    path = tmp_path / "log.npz"
    assert cli.main_xor(["--log-gradients", str(path)]) == 130
    assert kb.load_gradient_log(path).steps.tolist() == [0, 1, 2]
