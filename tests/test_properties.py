"""Property tests that generate valid inputs, which must be accepted and kept as they are.

A check that refuses everything passes every "bad input is refused" test; these tests are the
other half. NumPy only (no Keras), so they are quick.
"""

import csv
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kerasbp.checks import check_xy
from kerasbp.data import load_xy_csv
from kerasbp.reference.losses import binary_crossentropy, mse

#: float32's largest finite value: larger numbers cannot be cast, and are refused.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@st.composite
def valid_xy(draw):
    """`(X, y, n_features, n_outputs)`: arrays of numbers that `check_xy` must accept, in any
    accepted form (bool, int or float; `X` 1-D for one feature; `y` 1-D or 2-D; a list)."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 3))
    m = draw(st.integers(1, 2))

    def array(shape):
        dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]))
        elements = None
        if np.dtype(dtype).kind == "f":
            # up to float32's largest finite value: nothing larger can be cast to float32
            elements = st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=np.dtype(dtype).itemsize * 8)
        return draw(hnp.arrays(dtype, shape, elements=elements))

    X = array((n,) if k == 1 and draw(st.booleans()) else (n, k))
    y = array((n,) if m == 1 and draw(st.booleans()) else (n, m))
    if draw(st.booleans()):
        X = X.tolist()  # nested Python lists are accepted too
    n_features = draw(st.sampled_from([None, k]))
    n_outputs = draw(st.sampled_from([None, m]))
    return X, y, n_features, n_outputs, (n, k, m)


@settings(max_examples=150, deadline=None)
@given(valid_xy(), st.sampled_from(["float32", "float64"]))
def test_valid_arrays_are_accepted_and_kept(case, dtype):
    X, y, n_features, n_outputs, (n, k, m) = case
    Xc, yc = check_xy(X, y, n_features=n_features, n_outputs=n_outputs, dtype=dtype)
    assert Xc.shape == (n, k) and yc.shape == (n, m)
    assert Xc.dtype == yc.dtype == dtype
    np.testing.assert_array_equal(Xc, np.asarray(X).astype(dtype).reshape(n, k))
    np.testing.assert_array_equal(yc, np.asarray(y).astype(dtype).reshape(n, m))


NAME = st.text(st.characters(codec="utf-8", exclude_characters=',"\r\n\x00\ufeff'), min_size=1, max_size=6).filter(lambda s: s.strip() == s and s)
SPACES = st.sampled_from(["", " ", "  ", "\t"])


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(NAME, min_size=2, max_size=4, unique=True),
    pads=st.lists(st.tuples(SPACES, SPACES), min_size=4, max_size=4),
    values=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    data=st.data(),
)
def test_csv_files_with_padded_header_cells_and_cells_load(names, pads, values, data):
    # Spreadsheet exports write "a, y" or " y": the names are found without their spaces, and
    # every value comes back exactly (repr of a float reads back to the same float).
    values = values[:, : len(names)]
    y_column = data.draw(st.sampled_from(names), label="y_column")
    x_columns = data.draw(st.lists(st.sampled_from([c for c in names if c != y_column]), min_size=1, unique=True), label="x_columns")
    header = [left + name + right for name, (left, right) in zip(names, pads, strict=False)]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "data.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in values:
                writer.writerow([f" {float(v)!r}" for v in row])
        as_string = data.draw(st.booleans(), label="x_columns as one string")
        X, y = load_xy_csv(path, ",".join(x_columns) if as_string else x_columns, y_column)
    columns = [names.index(c) for c in x_columns]
    np.testing.assert_array_equal(X, values[:, columns])
    np.testing.assert_array_equal(y[:, 0], values[:, names.index(y_column)])


def test_a_header_written_with_spaces_after_the_commas_loads(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text("a, b, y\n1, 2, 3\n4, 5, 6\n", encoding="utf-8")
    X, y = load_xy_csv(path, "a, b", "y")
    np.testing.assert_array_equal(X, [[1.0, 2.0], [4.0, 5.0]])
    np.testing.assert_array_equal(y, [[3.0], [6.0]])


@settings(max_examples=100, deadline=None)
@given(
    y=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 3)), elements=st.floats(0, 1)),
    p=st.data(),
)
def test_losses_accept_valid_targets_and_predictions(y, p):
    # Targets in [0, 1], predictions anywhere in [0, 1] including the clipped ends: finite losses.
    pred = p.draw(hnp.arrays(np.float64, y.shape, elements=st.floats(0, 1)))
    assert np.isfinite(binary_crossentropy(y, pred)) and binary_crossentropy(y, pred) >= 0
    assert float(mse(y, pred)) == pytest.approx(np.mean((y - pred) ** 2), rel=1e-15, abs=1e-300)
    if y.shape[1] == 1:  # (n,) targets against (n, 1) predictions, never broadcast to (n, n)
        assert mse(y[:, 0], pred) == mse(y, pred)
