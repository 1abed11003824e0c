import numpy as np
import pytest

from kerasbp.checks import check_positive_float, check_positive_int, check_range, check_xy
from kerasbp.data import Standardizer, batch_slices, least_squares, linear_data, load_xy_csv, xor_data


def test_xor_data_is_the_truth_table():
    X, y = xor_data()
    assert X.shape == (4, 2) and y.shape == (4, 1) and X.dtype == np.float32
    np.testing.assert_array_equal(y[:, 0], np.logical_xor(X[:, 0], X[:, 1]).astype(np.float32))
    assert xor_data("float64")[0].dtype == np.float64


def test_linear_data_reproduces_the_original_arrays_without_touching_global_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    X, y = linear_data()
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global state untouched
    np.random.seed(42)
    X_seed = np.random.rand(100, 1)
    y_seed = 2 * X_seed + 1 + 0.1 * np.random.randn(100, 1)
    np.testing.assert_array_equal(X, X_seed)  # bit for bit
    np.testing.assert_array_equal(y, y_seed)
    # the first point of the original linear regression, printed by hand from np.random.seed(42)
    assert X[0, 0] == pytest.approx(0.3745401188473625, abs=0)


def test_linear_data_arguments():
    X, y = linear_data(n_samples=5, slope=-3.0, intercept=0.5, noise=0.0, seed=1)
    assert X.shape == y.shape == (5, 1)
    np.testing.assert_allclose(y, -3.0 * X + 0.5, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="n_samples"):
        linear_data(n_samples=0)
    with pytest.raises(ValueError, match="noise"):
        linear_data(noise=-1.0)


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_xy_csv_reads_columns_by_name(tmp_path):
    path = write(tmp_path, "b,y,a\n1,10,4\n2,20,5\n\n3,30,6\n")
    X, y = load_xy_csv(path, ["a", "b"], "y")
    np.testing.assert_array_equal(X, [[4, 1], [5, 2], [6, 3]])
    np.testing.assert_array_equal(y, [[10], [20], [30]])
    X2, _ = load_xy_csv(path, "a,b", "y")  # comma-separated string
    np.testing.assert_array_equal(X2, X)


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,y\n1,2\nx,3\n", r"line 3, column 'a': expected a finite number. Received: 'x'"),
        ("a,y\n1,2\n,3\n", r"line 3, column 'a'"),
        ("a,y\n1,nan\n", r"line 2, column 'y'.*'nan'"),
        ("a,z\n1,2\n", r"`y_column` must name columns of the CSV header.*\['a', 'z'\]. Received: 'y'"),
        ("a,y\n", r"at least one data row"),
        ("", r"header row"),
    ],
    ids=["non-numeric", "empty-cell", "nan", "missing-column", "no-rows", "empty-file"],
)
def test_load_xy_csv_bad_files(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_xy_csv(write(tmp_path, text), ["a"], "y")


def test_load_xy_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_xy_csv(tmp_path / "nope.csv", ["a"], "y")


def test_standardizer_round_trip_and_constant_column():
    X = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    s = Standardizer(X)
    Z = s.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose(Z.std(axis=0), 1, rtol=1e-15)
    np.testing.assert_allclose(s.inverse(Z), X, rtol=1e-15)
    with pytest.raises(ValueError, match=r"column 'b' of `X`: it is constant \(every value is 7.0"):
        Standardizer(np.array([[1.0, 7.0], [2.0, 7.0]]), columns=["a", "b"])


def test_check_xy_normalizes_1d_targets_and_refuses_broadcasting_shapes():
    X, y = check_xy([1, 2, 3, 4], [1, 2, 3, 4])
    assert X.shape == (4, 1) and y.shape == (4, 1) and X.dtype == np.float32
    X, y = check_xy(np.array([[True, False]]), np.array([3]), dtype="float64")
    assert X.dtype == np.float64 and X.tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize(
    "X, y, kwargs, error, match",
    [
        (np.zeros((4, 1)), np.zeros(3), {}, ValueError, r"X with 4 rows \(shape \(4, 1\)\), y with 3 rows \(shape \(3, 1\)\)"),
        (np.zeros((0, 1)), np.zeros(0), {}, ValueError, r"`X` must not be empty"),
        ([[1.0], [np.nan]], [1, 2], {}, ValueError, r"`X` must be finite. Received nan at row 1, column 0"),
        ([[1.0], [2.0]], [1, np.inf], {}, ValueError, r"`y` must be finite. Received inf at row 1, column 0"),
        ([["a"], ["b"]], [1, 2], {}, TypeError, r"`X` must hold numbers.*dtype <U1"),
        (np.array([[1], [2]], dtype=object), [1, 2], {}, TypeError, r"dtype object"),
        ([1.0, 2.0], [1, 2], {"n_features": 2}, ValueError, r"2-D of shape \(n_samples, 2\).*shape \(2,\)"),
        (np.zeros((2, 3)), [1, 2], {"n_features": 2}, ValueError, r"`X` has 3 features, but the model expects 2"),
        (np.zeros((2, 2, 2)), [1, 2], {}, ValueError, r"`X` must be 2-D. Received an array of shape \(2, 2, 2\)"),
        ([[1.0], [2.0, 3.0]], [1, 2], {}, ValueError, r"rectangular"),
    ],
    ids=["lengths", "empty", "nan-X", "inf-y", "strings", "objects", "1d-X-two-inputs", "width", "3d", "ragged"],
)
def test_check_xy_bad_input(X, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_xy(X, y, **kwargs)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None], ids=str)
def test_check_positive_int_refuses(value):
    with pytest.raises((TypeError, ValueError), match=f"`epochs` must be a positive integer. Received: epochs={value!r}"):
        check_positive_int("epochs", value)


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), "0.1", None], ids=str)
def test_check_positive_float_refuses(value):
    with pytest.raises((TypeError, ValueError), match="`learning_rate` must be a positive finite number"):
        check_positive_float("learning_rate", value)


def test_check_range_bounds():
    assert check_range("momentum", 0.0, 0.0, 1.0) == 0.0
    with pytest.raises(ValueError, match=r"`momentum` must be a number in \[0.0, 1.0\). Received: momentum=1.0"):
        check_range("momentum", 1.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "text, x_columns, y_column, match",
    [
        ("x,y\n1,2\n", "x,", "y", r"none empty. Received: x_columns='x,'"),
        ("x,y\n1,2\n", "x,x", "y", "must not name a column twice"),
        ("x,y\n1,2\n", "x", "x", "must not also be an input column"),
        ("x,x,y\n1,2,3\n", "x", "y", "`x_columns` names column 'x', which appears 2 times in the CSV header of `path`"),
        ("x,y\n1,2\n2,5,6\n", "x", "y", r"line 3: expected 2 fields as in the header. Received 3"),
    ],
    ids=["empty-name", "repeated", "target-is-input", "duplicate-header", "ragged-row"],
)
def test_load_xy_csv_refuses_ambiguous_columns_and_rows(tmp_path, text, x_columns, y_column, match):
    with pytest.raises(ValueError, match=match):
        load_xy_csv(write(tmp_path, text), x_columns, y_column)


def test_load_xy_csv_encodings(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("x,y\n1,2\n".encode("utf-8-sig"))  # with a byte-order mark
    X, y = load_xy_csv(path, "x", "y")
    assert X.tolist() == [[1.0]] and y.tolist() == [[2.0]]
    path.write_bytes(b"\xffx,y\n1,2\n")
    with pytest.raises(ValueError, match="must be a UTF-8 text file"):
        load_xy_csv(path, "x", "y")
    with pytest.raises(TypeError, match="`path` must be a file path. Received: path=None"):
        load_xy_csv(None, "x", "y")


# ---------------------------------------------------------------------------- least squares, batches


def test_least_squares_known_answer():
    X = np.array([[0.0], [1.0], [2.0]])
    coef, intercept = least_squares(X, 3 * X - 1)
    assert coef.dtype == np.float64 and coef.shape == (1,) and isinstance(intercept, float)
    assert coef.tolist() == pytest.approx([3.0], abs=1e-12) and intercept == pytest.approx(-1.0, abs=1e-12)


def test_least_squares_against_polyfit_and_two_columns():
    # The same fit two ways: lstsq on [X, 1] and np.polyfit (1e-10: two float64 solvers).
    X, y = linear_data()
    (slope,), intercept = least_squares(X, y[:, 0])  # 1-D targets are one column
    expected_slope, expected_intercept = np.polyfit(X[:, 0], y[:, 0], 1)
    assert slope == pytest.approx(expected_slope, rel=1e-10) and intercept == pytest.approx(expected_intercept, rel=1e-10)
    rng = np.random.default_rng(0)
    X2 = rng.normal(size=(50, 2))  # (50, 2)
    coef, intercept = least_squares(X2, X2 @ [0.5, -2.0] + 3.0)
    np.testing.assert_allclose(coef, [0.5, -2.0], rtol=0, atol=1e-12)
    assert intercept == pytest.approx(3.0, abs=1e-12)


@pytest.mark.parametrize(
    "X, y, error, match",
    [
        ([[1.0], [2.0]], [1.0], ValueError, r"same number of rows.*\(2, 1\).*\(1, 1\)"),
        ([[1.0], [2.0]], [[1.0, 2.0], [3.0, 4.0]], ValueError, r"`y` must be one column"),
        ([[1.0], [np.nan]], [1.0, 2.0], ValueError, "`X`"),
        ([["a"], ["b"]], [1.0, 2.0], TypeError, "`X`"),
    ],
    ids=["rows", "two-targets", "nan", "strings"],
)
def test_least_squares_bad_input(X, y, error, match):
    with pytest.raises(error, match=match):
        least_squares(X, y)


def test_batch_slices_match_fit_without_shuffle():
    assert batch_slices(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]  # last partial batch kept
    assert batch_slices(4, 4) == [slice(0, 4)]
    assert batch_slices(3, 32) == [slice(0, 3)]
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        batch_slices(4, 0)
    with pytest.raises(TypeError, match="`n_samples`"):
        batch_slices(4.0, 2)


# ---------------------------------------------------------------- spirals


def test_spiral_data_shapes_dtypes_and_reproducibility():
    from kerasbp import spiral_data

    X, y = spiral_data()
    assert X.shape == (300, 2) and X.dtype == np.float32 and y.shape == (300,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 100, 100]
    X2, y2 = spiral_data(seed=0)
    np.testing.assert_array_equal(X, X2)
    assert not np.array_equal(X, spiral_data(seed=1)[0])
    assert np.max(np.linalg.norm(X, axis=1)) <= 1.0 + 1e-6  # radii in [0, 1]
    X4, y4 = spiral_data(n_per_class=10, n_classes=4, noise=0.0)
    assert X4.shape == (40, 2) and set(y4.tolist()) == {0, 1, 2, 3}


def test_spiral_data_bad_input():
    from kerasbp import spiral_data

    with pytest.raises(ValueError, match=r"`n_classes` must be at least 2"):
        spiral_data(n_classes=1)
    with pytest.raises(ValueError, match=r"n_per_class"):
        spiral_data(n_per_class=0)
    with pytest.raises(ValueError, match=r"noise"):
        spiral_data(noise=-1.0)
