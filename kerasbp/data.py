"""The teaching data sets, a CSV loader for a user's own data, least squares, batching and standardization.

Only NumPy and the standard library are imported here.
"""

import csv
import os

import numpy as np

from kerasbp.checks import check_array, check_dtype, check_positive_int, check_range, check_seed


def xor_data(dtype="float32"):
    """The XOR truth table, the data of the classic NumPy XOR example.

    Args:
        dtype: float dtype of the arrays. Defaults to `"float32"`.

    Returns:
        `(X, y)`: `X` of shape `(4, 2)` with rows `[0, 0], [0, 1], [1, 0], [1, 1]`, and `y` of shape
        `(4, 1)` with `[0], [1], [1], [0]`.

    Raises:
        ValueError: if `dtype` is not a float dtype.

    Example:
        >>> X, y = xor_data()
        >>> X.shape, y.ravel().tolist()
        ((4, 2), [0.0, 1.0, 1.0, 0.0])
    """
    dtype = check_dtype("dtype", dtype)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([[0], [1], [1], [0]], dtype=dtype)
    return X, y


def linear_data(n_samples=100, slope=2.0, intercept=1.0, noise=0.1, seed=42):
    """Noisy points on a line, `y = slope * x + intercept + noise * N(0, 1)`, with `x ~ U[0, 1)`.

    With the defaults this reproduces, bit for bit, the arrays of the Keras linear regression that
    kerasbp grew from:
    `np.random.seed(42); X = np.random.rand(100, 1); y = 2 * X + 1 + 0.1 * np.random.randn(100, 1)`.
    It draws from its own `np.random.RandomState(seed)` (the same generator as `np.random.seed`),
    so NumPy's global random state is left untouched.

    Args:
        n_samples: int >= 1, the number of points. Defaults to 100.
        slope: float, the true coefficient. Defaults to 2.0.
        intercept: float, the true intercept. Defaults to 1.0.
        noise: float >= 0, standard deviation of the Gaussian noise, in units of y. Defaults to 0.1.
        seed: int, seed of the generator. Defaults to 42.

    Returns:
        `(X, y)`: float64 arrays of shape `(n_samples, 1)`.

    Raises:
        TypeError, ValueError: for a non-integer or non-positive `n_samples`, a negative `noise`
            or a non-finite `slope`/`intercept`.
    """
    n_samples = check_positive_int("n_samples", n_samples)
    slope = check_range("slope", slope, -np.inf, np.inf, low_inclusive=False)
    intercept = check_range("intercept", intercept, -np.inf, np.inf, low_inclusive=False)
    noise = check_range("noise", noise, 0.0, np.inf)
    rng = np.random.RandomState(seed)
    X = rng.rand(n_samples, 1)
    y = slope * X + intercept + noise * rng.randn(n_samples, 1)
    return X, y


def spiral_data(n_per_class=100, n_classes=3, noise=0.2, seed=0):
    """Interleaved spirals, the classic multi-class toy problem (CS231n's "spiral" data).

    Class `j` has `n_per_class` points at radii `r` evenly spaced in `[0, 1]` and angles
    `t = linspace(4 j, 4 (j + 1)) + noise * N(0, 1)`, at `(r sin t, r cos t)`. Generated, no
    download. A linear classifier cannot separate them; a small MLP with softmax can.

    Args:
        n_per_class: int >= 1. Defaults to 100.
        n_classes: int >= 2. Defaults to 3.
        noise: float >= 0, the standard deviation of the angle noise. Defaults to `0.2`.
        seed: int >= 0, seed of `np.random.default_rng`. Defaults to 0.

    Returns:
        `(X, y)`: `X` float32 of shape `(n_per_class * n_classes, 2)`, `y` int64 labels of shape
        `(n_per_class * n_classes,)`, class by class.

    Raises:
        TypeError, ValueError: for counts that are not positive integers, fewer than two classes,
            or a negative noise.

    Example:
        >>> X, y = spiral_data(n_per_class=5, n_classes=3)
        >>> X.shape, X.dtype.name, y.tolist()
        ((15, 2), 'float32', [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    """
    n_per_class = check_positive_int("n_per_class", n_per_class)
    n_classes = check_positive_int("n_classes", n_classes)
    if n_classes < 2:
        raise ValueError(f"`n_classes` must be at least 2. Received: n_classes={n_classes}")
    noise = check_range("noise", noise, 0.0, np.inf)
    rng = np.random.default_rng(check_seed(seed))
    X = np.empty((n_per_class * n_classes, 2))
    y = np.empty(n_per_class * n_classes, dtype=np.int64)
    for j in range(n_classes):
        rows = slice(n_per_class * j, n_per_class * (j + 1))
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(4.0 * j, 4.0 * (j + 1), n_per_class) + rng.standard_normal(n_per_class) * noise
        X[rows] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[rows] = j
    return X.astype(np.float32), y


def load_xy_csv(path, x_columns, y_column):
    """Read a user's data from a CSV file with a header row.

    Args:
        path: str or path-like, the CSV file (UTF-8, with or without a BOM; comma-separated;
            the first row holds the column names; every row has as many fields as the header).
        x_columns: str or list of str, the input column names, in the order of the model's inputs.
            A comma-separated string is split.
        y_column: str, the target column name, not one of `x_columns`.

    Returns:
        `(X, y)`: float64 arrays of shapes `(n_rows, len(x_columns))` and `(n_rows, 1)`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        TypeError: if `path` is not a path.
        ValueError: for empty, repeated or overlapping column names, a file that is not UTF-8,
            has no header or no data rows, a column that is not in the header (naming it and the
            columns found) or appears twice there, a row with too few or too many fields, or a cell
            that is empty, not a number, NaN or Inf (naming its line and column).
    """
    given = x_columns
    if isinstance(x_columns, str):
        x_columns = x_columns.split(",")
    x_columns = [c.strip() if isinstance(c, str) else c for c in x_columns]
    if not x_columns or not all(isinstance(c, str) and c for c in x_columns):
        raise ValueError(f"`x_columns` must name one or more columns, none empty. Received: x_columns={given!r}")
    if len(set(x_columns)) != len(x_columns):
        raise ValueError(f"`x_columns` must not name a column twice. Received: x_columns={given!r}")
    if not isinstance(y_column, str) or not y_column.strip():
        raise ValueError(f"`y_column` must be a column name. Received: y_column={y_column!r}")
    y_column = y_column.strip()
    if y_column in x_columns:
        raise ValueError(f"`y_column` must not also be an input column. Received: y_column={y_column!r}, x_columns={given!r}")
    try:
        exists = os.path.isfile(path)
    except TypeError:
        raise TypeError(f"`path` must be a file path. Received: path={path!r}") from None
    if not exists:
        raise FileNotFoundError(f"`path` must be an existing CSV file. Received: path={str(path)!r}")
    try:
        return _read_columns(path, x_columns, y_column)
    except UnicodeDecodeError as e:
        raise ValueError(f"`path` must be a UTF-8 text file. Received {str(path)!r}, which is not ({e.reason} at byte {e.start})") from None


def _read_columns(path, x_columns, y_column):
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM (Excel) is dropped
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"`path` must be a CSV file with a header row. Received an empty file: {str(path)!r}")
        header = [h.strip() for h in header]
        wanted = x_columns + [y_column]
        for col, name in zip(wanted, ["x_columns"] * len(x_columns) + ["y_column"], strict=True):
            if col not in header:
                raise ValueError(f"`{name}` must name columns of the CSV header of `path` {str(path)!r}: {header}. Received: {col!r}")
            if header.count(col) > 1:
                raise ValueError(f"`{name}` names column {col!r}, which appears {header.count(col)} times in the CSV header of `path` {str(path)!r}")
        index = [header.index(col) for col in wanted]
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) != len(header):
                raise ValueError(
                    f"`path` {str(path)!r}, line {line_no}: expected {len(header)} fields as in the header. Received {len(row)}: {row!r}"
                )
            values = []
            for col, i in zip(wanted, index, strict=True):
                cell = row[i].strip() if i < len(row) else ""
                try:
                    value = float(cell)
                except ValueError:
                    value = None
                if value is None or not np.isfinite(value):
                    raise ValueError(
                        f"`path` {str(path)!r}, line {line_no}, column {col!r}: expected a finite number. Received: {cell!r}"
                    )
                values.append(value)
            rows.append(values)
    if not rows:
        raise ValueError(f"`path` must hold at least one data row. Received a header only: {str(path)!r}")
    data = np.array(rows, dtype="float64")
    return data[:, :-1], data[:, -1:]


class Standardizer:
    """Scales each column to zero mean and unit variance: `(a - mean) / std`.

    Args:
        a: float array of shape `(n_samples, n_columns)` to take the mean and (population)
            standard deviation from.
        name: str, the array's name used in messages. Defaults to `"X"`.
        columns: optional list of column names used in messages.

    Raises:
        ValueError: if a column is constant (its standard deviation is 0), naming the column.
    """

    def __init__(self, a, name="X", columns=None):
        a = check_array(name, a, dtype="float64")
        self.mean = a.mean(axis=0)  # (n_columns,)
        self.std = a.std(axis=0)  # (n_columns,)
        for j, s in enumerate(self.std):
            if not s > 0:
                label = repr(columns[j]) if columns else str(j)
                raise ValueError(
                    f"cannot standardize column {label} of `{name}`: it is constant "
                    f"(every value is {float(self.mean[j])!r}, standard deviation 0)"
                )

    def transform(self, a):
        """`(a - mean) / std`, column by column."""
        return (np.asarray(a, dtype="float64") - self.mean) / self.std

    def inverse(self, a):
        """`a * std + mean`, column by column."""
        return np.asarray(a, dtype="float64") * self.std + self.mean


def least_squares(X, y):
    """Ordinary least squares with an intercept, in closed form: `min ||X w + b - y||^2`.

    Solved with `np.linalg.lstsq` on `[X, 1]` in float64 (the minimum-norm solution when the
    problem is not determined, e.g. fewer rows than columns).

    Args:
        X: array-like `(n_samples, n_features)` (1-D for one feature).
        y: array-like `(n_samples,)` or `(n_samples, 1)`.

    Returns:
        `(coef, intercept)`: float64 array `(n_features,)` and a float.

    Raises:
        TypeError, ValueError: for non-numeric, empty or non-finite arrays, or lengths that differ.

    Example:
        >>> coef, intercept = least_squares([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
        >>> [round(float(c), 6) for c in coef], round(intercept, 6)
        ([2.0], 1.0)
    """
    X = check_array("X", X, dtype="float64")
    y = check_array("y", y, dtype="float64")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"`X` and `y` must have the same number of rows. Received: X of shape {X.shape}, y of shape {y.shape}")
    if y.shape[1] != 1:
        raise ValueError(f"`y` must be one column. Received: y of shape {y.shape}")
    A = np.hstack([X, np.ones((len(X), 1))])  # (n, n_features + 1)
    solution = np.linalg.lstsq(A, y[:, 0], rcond=None)[0]
    return solution[:-1], float(solution[-1])


def batch_slices(n_samples, batch_size):
    """The batches of `fit(shuffle=False)`: consecutive slices in order, the last partial one kept.

    Args:
        n_samples: int >= 1, rows in the data.
        batch_size: int >= 1 (larger than `n_samples` means one batch of everything).

    Returns:
        list of `slice` objects, `ceil(n_samples / batch_size)` of them.

    Example:
        >>> batch_slices(5, 2)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    n_samples = check_positive_int("n_samples", n_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    return [slice(start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)]
