"""The log a `GradientLogger` keeps: `GradientLog`, its `health()` check, and saving and loading it.

NumPy only: a saved log can be read and examined without Keras. The statistics recorded per
variable and step are named in `STATS`; the capture computes them in that order
(`kerasbp/logger/capture.py`, `step_statistics`), and everything else reads them by name
(`GradientLog.stat`), so a statistic is added in those two places only.
"""

import csv
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from kerasbp.checks import check_choice, check_positive_float
from kerasbp.files import atomic_write
from kerasbp.logger import sidecar

#: The statistics recorded per variable per logged step, in this order.
STATS = ("norm", "mean", "std", "min", "max", "max_abs", "nonfinite", "weight_norm", "update_ratio")


class Health:
    """What `GradientLog.health()` found: a list of flags and the figures behind them.

    Attributes:
        vanishing: bool, the first layer's gradient norm is a tiny fraction of the last layer's.
        exploding: bool, a gradient norm above the threshold, or a non-finite gradient.
        nonfinite: bool, a logged loss or gradient held NaN or Inf.
        dead_units: dict `{variable name: list of unit indices}` of relu units whose gradient was
            zero at every logged step.
        figures: dict of the numbers behind each flag.
    """

    def __init__(self, vanishing, exploding, nonfinite, dead_units, figures):
        self.vanishing = vanishing
        self.exploding = exploding
        self.nonfinite = nonfinite
        self.dead_units = dead_units
        self.figures = figures

    @property
    def ok(self):
        """True when nothing is flagged."""
        return not (self.vanishing or self.exploding or self.nonfinite or self.dead_units)

    def __str__(self):
        f = self.figures
        lines = [f"gradient health over {f['n_logged']} logged steps: {'ok' if self.ok else 'FLAGGED'}"]
        if "first_last_ratio" in f:
            lines.append(
                f"  {'VANISHING' if self.vanishing else 'vanishing: no'} - median |grad| of first kernel "
                f"{f['first_kernel']!r} / last kernel {f['last_kernel']!r} = {f['first_last_ratio']:.3g} "
                f"(threshold {f['vanishing_ratio']:.3g})"
            )
        lines.append(
            f"  {'EXPLODING' if self.exploding else 'exploding: no'} - largest gradient norm "
            f"{f['max_norm']:.3g} (threshold {f['exploding_norm']:.3g})"
        )
        if self.nonfinite:
            where = f"variable {f['first_nonfinite_variable']!r}" if f["first_nonfinite_variable"] else "the loss (gradients finite)"
            lines.append(f"  NON-FINITE - first at step {f['first_nonfinite_step']}, {where}")
        else:
            lines.append("  non-finite: none")
        if self.dead_units:
            for name, units in self.dead_units.items():
                lines.append(f"  DEAD UNITS in {name!r}: {len(units)} of {f['units'][name]} (units {units})")
        else:
            lines.append("  dead relu units: none")
        return "\n".join(lines)

    __repr__ = __str__


class GradientLog:
    """Gradients recorded at logged optimizer steps: a `GradientLogger`'s data, or one loaded back.

    Rows are appended in chunks while training and joined on first read.

    Attributes:
        names: list of str, the variable paths in `model.trainable_weights` order.
        layers: list of str, the layer name of each variable.
        activations: list of str, the activation of each variable's layer ("" when it has none).
        shapes: list of tuples, each variable's shape.
        record: `"stats"` or `"full"`.
        every_n_steps: int, the logging period in optimizer steps.
        optimizer_variable_names: list of str, with snapshots: the optimizer's variables.
    """

    def __init__(self):
        self.names, self.layers, self.activations, self.shapes = [], [], [], []
        self.record = "stats"
        self.every_n_steps = 1
        self.optimizer_variable_names = []
        self._chunks = {"steps": [], "epochs": [], "losses": [], "stats": []}
        self._cache = {}
        self._grads = None  # list per variable of chunks (n, *shape), or None
        self._alive = None  # list per variable: bool array over units (last axis), or None
        self._weights = None  # with snapshots: list per variable of chunks (weights before each step)
        self._optimizer_state = None  # with snapshots: list per optimizer variable of chunks

    def _sync(self):
        """Hook for `GradientLogger`: read rows still on the device before a read."""

    def _append(self, steps, epochs, losses, stats):
        """Append rows: `steps`, `epochs` int64 `(n,)`, `losses` float64 `(n,)`, `stats` `(n, n_variables, len(STATS))`."""
        for key, value in (("steps", steps), ("epochs", epochs), ("losses", losses), ("stats", stats)):
            self._chunks[key].append(value)
        self._cache.clear()

    def _joined(self, key, empty_shape, dtype):
        self._sync()
        if key not in self._cache:
            chunks = self._chunks[key]
            self._cache[key] = np.concatenate(chunks) if chunks else np.zeros(empty_shape, dtype)
        return self._cache[key]

    @property
    def steps(self):
        """1-D int64 array `(n_logged,)`: the optimizer iteration (0-based) of each logged row."""
        return self._joined("steps", (0,), np.int64)

    @property
    def epochs(self):
        """1-D int64 array `(n_logged,)`: the epoch (0-based, within its `fit` call) of each row."""
        return self._joined("epochs", (0,), np.int64)

    @property
    def losses(self):
        """1-D float64 array `(n_logged,)`: the loss of each logged step's batch, before its update."""
        return self._joined("losses", (0,), np.float64)

    def stats_array(self):
        """float64 array `(n_logged, n_variables, len(STATS))` of all statistics."""
        return self._joined("stats", (0, len(self.names), len(STATS)), np.float64)

    def stat(self, name):
        """One statistic of every variable: float64 array `(n_logged, n_variables)`.

        Args:
            name: str, one of `STATS`.

        Raises:
            ValueError: for a name not in `STATS`.
        """
        name = check_choice("name", name, STATS)
        return self.stats_array()[:, :, STATS.index(name)]

    @property
    def stats(self):
        """dict `{variable name: {stat: 1-D float64 array (n_logged,)}}`, stats as in `STATS`.

        `norm` is the L2 norm of the gradient, `mean`/`std`/`min`/`max`/`max_abs` its entries'
        statistics, `nonfinite` the number of NaN/Inf entries, `weight_norm` the L2 norm of the
        variable before the step, and `update_ratio` = `|w_after - w_before| / |w_before|`
        (inf or NaN when the weights were zero). A variable whose gradient was `None` has NaN rows.
        """
        a = self.stats_array()
        return {name: {s: a[:, j, i] for i, s in enumerate(STATS)} for j, name in enumerate(self.names)}

    def gradients(self):
        """The whole gradients, with `record="full"`.

        Returns:
            list, in `model.trainable_weights` order, of float arrays shaped
            `(n_logged, *variable.shape)` (memory-mapped when streamed to a folder).

        Raises:
            ValueError: if the log was recorded with `record="stats"`.
        """
        if self.record != "full":
            raise ValueError('gradients() needs GradientLogger(record="full"). This log was recorded with record="stats"')
        self._sync()
        return [self._grad_array(j) for j in range(len(self.names))]

    def _grad_array(self, j):
        key = ("grad", j)
        if key not in self._cache:
            chunks = self._grads[j] if self._grads is not None else []
            if len(chunks) == 1:  # as it is: a log loaded from a streamed folder stays memory-mapped
                self._cache[key] = chunks[0]
            else:
                self._cache[key] = np.concatenate(chunks) if chunks else np.zeros((0, *self.shapes[j]), np.float32)
        return self._cache[key]

    def last_gradients(self):
        """The whole gradients of the last logged step (with `record="full"`), without joining
        the earlier ones.

        Returns:
            list in `model.trainable_weights` order of arrays `variable.shape`.

        Raises:
            ValueError: if the log was recorded with `record="stats"` or holds no step.
        """
        if self.record != "full":
            raise ValueError('last_gradients() needs GradientLogger(record="full"). This log was recorded with record="stats"')
        self._sync()
        if not len(self.steps):
            raise ValueError("last_gradients() needs a log with at least one step. This log is empty")
        if self._grads and all(self._grads):
            return [chunks[-1][-1] for chunks in self._grads]
        return [g[-1] for g in self.gradients()]  # streamed to files

    def weights(self):
        """The weights each logged gradient was taken at (before that step's update).

        Returns:
            list in `model.trainable_weights` order of arrays `(n_logged, *variable.shape)`.

        Raises:
            ValueError: unless recorded with `GradientLogger(snapshots=True)`.
        """
        return self._snapshot_arrays("_weights", self.shapes)

    def optimizer_state(self):
        """The optimizer's variables before each logged step (names in `optimizer_variable_names`).

        Returns:
            list of arrays `(n_logged, *shape)`, one per optimizer variable (`iterations`,
            `learning_rate`, then the slots such as momentums and velocities, in
            `optimizer.variables` order).

        Raises:
            ValueError: unless recorded with `GradientLogger(snapshots=True)`.
        """
        return self._snapshot_arrays("_optimizer_state", None)

    def _snapshot_arrays(self, attr, shapes):
        self._sync()
        chunks = getattr(self, attr)
        if chunks is None:
            raise ValueError("weights() and optimizer_state() need GradientLogger(snapshots=True)")
        # An empty log has no chunk to take a shape from; its arrays have 0 rows.
        return [np.concatenate(c) if c else np.zeros((0, *(shapes[j] if shapes else ())), np.float32) for j, c in enumerate(chunks)]

    def __len__(self):
        return len(self.steps)

    def to_csv(self, path):
        """Write the statistics as a long table: one row per logged step and variable.

        Columns: `step, epoch, loss, variable, layer`, then every name in `STATS`. The file is
        written atomically (`kerasbp.files.atomic_write`).

        Args:
            path: str or path-like, the CSV file to write; its folder must exist.

        Raises:
            ValueError, TypeError: for a path that is not a file in an existing folder.
        """
        steps, epochs, losses, a = self.steps, self.epochs, self.losses, self.stats_array()

        def write(f):
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow(["step", "epoch", "loss", "variable", "layer", *STATS])
            for r in range(len(steps)):
                for j, name in enumerate(self.names):
                    w.writerow([int(steps[r]), int(epochs[r]), repr(float(losses[r])), name, self.layers[j], *(repr(float(v)) for v in a[r, j])])
            text.flush()
            text.detach()

        atomic_write(path, write)

    def to_npz(self, path):
        """Write everything (and, with `record="full"`, the gradient arrays `grad_<i>`) to `path`.

        Read it back with `kerasbp.load_gradient_log(path)`. The file is written atomically.

        Args:
            path: str or path-like, the `.npz` file to write; its folder must exist.

        Raises:
            ValueError, TypeError: for a path that is not a file in an existing folder.
        """
        arrays = self._arrays(gradients=self.record == "full")
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def _arrays(self, gradients, **extra_meta):
        """Everything in the log as named arrays for `np.savez`; whole gradients if `gradients`."""
        meta = extra_meta | {
            "names": self.names,
            "layers": self.layers,
            "activations": self.activations,
            "shapes": [list(s) for s in self.shapes],
            "record": self.record,
            "every_n_steps": self.every_n_steps,
            "stats": list(STATS),
        }
        arrays = {"steps": self.steps, "epochs": self.epochs, "losses": self.losses, "stats": self.stats_array(), "meta": np.array(json.dumps(meta))}
        for j, alive in enumerate(self._alive or []):
            if alive is not None:
                arrays[f"alive_{j}"] = alive
        if gradients:
            arrays.update({f"grad_{j}": np.asarray(g) for j, g in enumerate(self.gradients())})
        if self._weights is not None:
            arrays.update({f"weights_{j}": w for j, w in enumerate(self.weights())})
            arrays.update({f"optimizer_{j}": w for j, w in enumerate(self.optimizer_state())})
            arrays["optimizer_variable_names"] = np.array(self.optimizer_variable_names, dtype=str)
        return arrays

    def health(self, vanishing_ratio=1e-3, exploding_norm=1e3):
        """Flag vanishing, exploding and non-finite gradients, and dead relu units.

        Non-finite: a logged loss or gradient held NaN or Inf (the first such step is named).
        Vanishing: the median over logged steps of `|grad(first kernel)| / |grad(last kernel)|` is
        below `vanishing_ratio` (kernels are the variables with 2 or more dimensions). Exploding:
        a gradient L2 norm above `exploding_norm`. Dead units: units (last axis of a relu layer's
        kernel) whose gradient was exactly zero at every logged step.

        Args:
            vanishing_ratio: positive float. Defaults to 1e-3.
            exploding_norm: positive float. Defaults to 1e3.

        Returns:
            `Health`, printable.

        Raises:
            TypeError, ValueError: for thresholds that are not positive finite numbers.
        """
        vanishing_ratio = check_positive_float("vanishing_ratio", vanishing_ratio)
        exploding_norm = check_positive_float("exploding_norm", exploding_norm)
        steps = self.steps
        figures = {"n_logged": len(steps), "vanishing_ratio": vanishing_ratio, "exploding_norm": exploding_norm}
        norms = self.stat("norm")  # (n_logged, n_variables)
        kernels = [j for j, s in enumerate(self.shapes) if len(s) >= 2]
        vanishing = False
        if len(kernels) >= 2 and len(steps):
            first, last = kernels[0], kernels[-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.nanmedian(norms[:, first] / norms[:, last]))
            figures.update(first_kernel=self.names[first], last_kernel=self.names[last], first_last_ratio=ratio)
            vanishing = bool(ratio < vanishing_ratio)
        finite_norms = norms[np.isfinite(norms)]
        figures["max_norm"] = float(finite_norms.max()) if finite_norms.size else float("nan")
        bad = self.stat("nonfinite") > 0  # (n_logged, n_variables)
        bad_rows = bad.any(axis=1) | ~np.isfinite(self.losses)
        nonfinite = bool(bad_rows.any())
        if nonfinite:
            r = int(np.flatnonzero(bad_rows)[0])
            variable = self.names[int(np.flatnonzero(bad[r])[0])] if bad[r].any() else None
            figures.update(first_nonfinite_step=int(steps[r]), first_nonfinite_variable=variable)
        exploding = nonfinite or bool(figures["max_norm"] > exploding_norm)
        dead, units = {}, {}
        for j, alive in enumerate(self._alive or []):
            if alive is not None and len(self.shapes[j]) >= 2 and self.activations[j] == "relu" and len(steps):
                units[self.names[j]] = int(alive.size)
                never = np.flatnonzero(~alive).tolist()
                if never:
                    dead[self.names[j]] = never
        figures["units"] = units
        return Health(vanishing, exploding, nonfinite, dead, figures)


#: In a folder that a `GradientLogger(path=...)` streamed to: the log without its gradients.
FOLDER_LOG = "log.npz"


def gradient_file(folder, j):
    """The raw file of variable `j`'s gradients in a streaming folder (rows of `shape`, C order)."""
    return os.path.join(folder, f"grad_{j}.bin")


def load_gradient_log(path):
    """Read a log written by `GradientLog.to_npz`, or the folder a `GradientLogger(path=...)` streamed to.

    Args:
        path: str or path-like of the `.npz` file, or of the streaming folder (its gradients are
            memory-mapped, not read into memory).

    Returns:
        `GradientLog` with the same steps, epochs, losses, stats, dead-unit tracking and (if
        recorded) gradients, weights and optimizer state. Where `path` was never written (the
        run was killed) but its sidecar `path + ".partial"` holds chunks, the log is recovered
        from them (`kerasbp.logger.sidecar.recover`) with a warning saying how many steps.

    Raises:
        FileNotFoundError: if `path` does not exist (or a folder holds no log).
        ValueError: if the file is not a kerasbp gradient log.
    """
    if not os.path.exists(path):
        recovered = sidecar.recover(path)  # a run killed before it wrote `path`
        if recovered is not None:
            with tempfile.TemporaryDirectory() as folder:
                np.savez(os.path.join(folder, "recovered.npz"), **recovered)
                return load_gradient_log(os.path.join(folder, "recovered.npz"))
    folder = None
    if os.path.isdir(path):
        folder, path = os.fspath(path), os.path.join(path, FOLDER_LOG)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`path` is a folder without a kerasbp gradient log ({FOLDER_LOG}). Received: path={folder!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be an existing .npz gradient log. Received: path={str(path)!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"`path` must be a .npz gradient log written by to_npz. Received a file that is not one: {str(path)!r}")
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data:
            raise ValueError(f"`path` is not a kerasbp gradient log (no 'meta' entry): {str(path)!r}")
        meta = json.loads(str(data["meta"]))
        log = GradientLog()
        log.names, log.layers, log.activations = meta["names"], meta["layers"], meta["activations"]
        log.shapes = [tuple(s) for s in meta["shapes"]]
        log.record, log.every_n_steps = meta["record"], meta["every_n_steps"]
        log._append(*(data[key] for key in ("steps", "epochs", "losses", "stats")))
        log._alive = [data[f"alive_{j}"] if f"alive_{j}" in data else None for j in range(len(log.names))]
        if log.record == "full" and folder is None:
            log._grads = [[data[f"grad_{j}"]] for j in range(len(log.names))]
        if "optimizer_variable_names" in data:
            log.optimizer_variable_names = data["optimizer_variable_names"].tolist()
            log._weights = [[data[f"weights_{j}"]] for j in range(len(log.names))]
            log._optimizer_state = [[data[f"optimizer_{j}"]] for j in range(len(log.optimizer_variable_names))]
        dtype = np.dtype(meta.get("grad_dtype", "float32"))
    if folder is not None:
        n = len(log.steps)
        log._grads = [[np.memmap(gradient_file(folder, j), dtype=dtype, mode="r", shape=(n, *shape))] if n else [] for j, shape in enumerate(log.shapes)]
    return log
