"""GradientLogger: the exact gradients Keras applies, every step, from inside `model.fit`.

Keras callbacks receive metrics, never gradients, and recomputing a gradient in
`on_train_batch_end` is wrong: the weights have already moved. The gradients that count are the
ones handed to `optimizer.apply` (via `apply_gradients`) inside the compiled train step.
`GradientLogger` wraps that method on the model's optimizer instance for the duration of `fit`,
so the capture runs inside the compiled step: per logged step it writes the statistics (and, if
asked, the whole gradient arrays) into ring-buffer variables on the device, and the callback reads
them back once per call of the train function (once per `steps_per_execution` steps).

Source of the capture point: `keras/src/backend/tensorflow/trainer.py` (`train_step` calls
`optimizer.scale_loss(loss)` and then `optimizer.apply_gradients(zip(grads, weights))`) and
`keras/src/optimizers/base_optimizer.py` (`apply_gradients` calls `apply`, which drops `None`
gradients, unscales, clips, applies weight decay, updates, and increments `iterations`).
"""

import csv
import json
import math
import os
import warnings

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_choice, check_output_path, check_positive_float, check_positive_int
from kerasbp.files import atomic_write

#: The statistics recorded per variable per logged step, in this order.
STATS = ("norm", "mean", "std", "min", "max", "max_abs", "nonfinite", "weight_norm", "update_ratio")
_STAT = {name: i for i, name in enumerate(STATS)}


class Health:
    """What `GradientLog.health()` found: a list of flags and the figures behind them.

    Attributes:
        vanishing: bool, the first layer's gradient norm is a tiny fraction of the last layer's.
        exploding: bool, a gradient norm above the threshold, or a non-finite gradient.
        nonfinite: bool, a gradient held NaN or Inf.
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
            lines.append(f"  NON-FINITE - first at step {f['first_nonfinite_step']}, variable {f['first_nonfinite_variable']!r}")
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

    Attributes:
        names: list of str, the variable paths in `model.trainable_weights` order.
        layers: list of str, the layer name of each variable.
        activations: list of str, the activation of each variable's layer ("" when it has none).
        shapes: list of tuples, each variable's shape.
        record: `"stats"` or `"full"`.
        every_n_steps: int, the logging period in optimizer steps.
    """

    def __init__(self):
        self.names, self.layers, self.activations, self.shapes = [], [], [], []
        self.record = "stats"
        self.every_n_steps = 1
        self._chunks = {"steps": [], "epochs": [], "losses": [], "stats": []}
        self._cache = {}
        self._grads = None  # list per variable: list of chunks, or a file-backed store
        self._alive = None  # list per variable: bool array over units (last axis), or None
        self._weights = None  # with snapshots: list per variable of chunks (weights before each step)
        self._optimizer_state = None  # with snapshots: list per optimizer variable of chunks
        self.optimizer_variable_names = []

    # Data are appended in chunks while training and joined on first read.
    def _sync(self):
        """Hook for GradientLogger: read rows still on the device."""

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
            `(n_logged, *variable.shape)` (memory-mapped when streamed to a file).

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
            chunks = self._grads[j]
            shape = (0, *self.shapes[j])
            self._cache[key] = np.concatenate(chunks) if chunks else np.zeros(shape, np.float32)
        return self._cache[key]

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
        return [np.concatenate(c) for c in chunks]

    def __len__(self):
        return len(self.steps)

    def _newest_gradients(self):
        """The last logged step's full gradients, one array per variable (for `compare`)."""
        self._sync()
        return [chunks[-1][-1] for chunks in self._grads]

    def to_csv(self, path):
        """Write the statistics as a long table: one row per logged step and variable.

        Columns: `step, epoch, loss, variable, layer`, then every name in `STATS`. The file is
        written atomically.
        """
        steps, epochs, losses, a = self.steps, self.epochs, self.losses, self.stats_array()

        def write(f):
            import io

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
        """
        arrays = {
            "steps": self.steps,
            "epochs": self.epochs,
            "losses": self.losses,
            "stats": self.stats_array(),
            "meta": np.array(
                json.dumps(
                    {
                        "names": self.names,
                        "layers": self.layers,
                        "activations": self.activations,
                        "shapes": [list(s) for s in self.shapes],
                        "record": self.record,
                        "every_n_steps": self.every_n_steps,
                        "stats": list(STATS),
                    }
                )
            ),
        }
        for j, alive in enumerate(self._alive or []):
            if alive is not None:
                arrays[f"alive_{j}"] = alive
        if self.record == "full":
            for j, g in enumerate(self.gradients()):
                arrays[f"grad_{j}"] = g
        if self._weights is not None:
            arrays.update({f"weights_{j}": w for j, w in enumerate(self.weights())})
            arrays.update({f"optimizer_{j}": w for j, w in enumerate(self.optimizer_state())})
            arrays["optimizer_variable_names"] = np.array(self.optimizer_variable_names)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def health(self, vanishing_ratio=1e-3, exploding_norm=1e3):
        """Flag vanishing, exploding and non-finite gradients, and dead relu units.

        Vanishing: the median over logged steps of `|grad(first kernel)| / |grad(last kernel)|` is
        below `vanishing_ratio` (kernels are the variables with 2 or more dimensions). Exploding:
        a gradient L2 norm above `exploding_norm`. Dead units: units (last axis of a relu layer's
        kernel) whose gradient was exactly zero at every logged step.

        Args:
            vanishing_ratio: positive float. Defaults to 1e-3.
            exploding_norm: positive float. Defaults to 1e3.

        Returns:
            `Health`, printable.
        """
        vanishing_ratio = check_positive_float("vanishing_ratio", vanishing_ratio)
        exploding_norm = check_positive_float("exploding_norm", exploding_norm)
        a = self.stats_array()
        steps = self.steps
        figures = {"n_logged": len(steps), "vanishing_ratio": vanishing_ratio, "exploding_norm": exploding_norm}
        norms = a[:, :, _STAT["norm"]]  # (n_logged, n_variables)
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
        bad = a[:, :, _STAT["nonfinite"]] > 0
        nonfinite = bool(bad.any())
        if nonfinite:
            r, j = np.argwhere(bad)[0]
            figures.update(first_nonfinite_step=int(steps[r]), first_nonfinite_variable=self.names[j])
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


def load_gradient_log(path):
    """Read a log written by `GradientLog.to_npz`.

    Args:
        path: str or path-like of the `.npz` file.

    Returns:
        `GradientLog` with the same steps, losses, stats, and (if recorded) gradients.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a kerasbp gradient log.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be an existing .npz gradient log. Received: path={str(path)!r}")
    import zipfile

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
        for key in ("steps", "epochs", "losses", "stats"):
            log._chunks[key] = [data[key]]
        log._alive = [data[f"alive_{j}"] if f"alive_{j}" in data else None for j in range(len(log.names))]
        if log.record == "full":
            log._grads = [[data[f"grad_{j}"]] for j in range(len(log.names))]
        if "optimizer_variable_names" in data:
            log.optimizer_variable_names = data["optimizer_variable_names"].tolist()
            log._weights = [[data[f"weights_{j}"]] for j in range(len(log.names))]
            log._optimizer_state = [[data[f"optimizer_{j}"]] for j in range(len(log.optimizer_variable_names))]
    return log


class GradientLogger(keras.callbacks.Callback, GradientLog):
    """Records the gradients the optimizer applies, at every `every_n_steps`-th step of `fit`.

    It works with a plain `model.fit(..., callbacks=[logger])` on any compiled Keras model with
    the TensorFlow backend (and with `kerasbp.train`). The gradients are those handed to
    `optimizer.apply_gradients` in the train step, before loss-scale division, clipping and
    weight decay, so they are exact with `shuffle=True`, a last partial batch and
    `steps_per_execution > 1` (every step of an execution is recorded).

    Args:
        every_n_steps: int >= 1, log optimizer steps whose 0-based iteration is a multiple of it.
            Defaults to 1.
        record: `"stats"` (per variable per step: `STATS`) or `"full"` (also the whole gradient
            arrays). Defaults to `"stats"`.
        on_nonfinite: what to do when a gradient holds NaN or Inf: `"warn"` (a warning naming the
            first step, layer and variable), `"stop"` (also stop training after that call of the
            train function) or `"raise"` (raise `FloatingPointError`). Defaults to `"warn"`.
        path: folder to stream full gradients to (one raw file per variable, memory-mapped back
            by `gradients()`; created if its parent folder exists; files of an earlier log there
            are replaced), or None to hold them in memory. Defaults to None.
        max_memory_mb: positive float, the bound on full gradients held in memory without `path`
            and on the device-side buffer; past it, training stops with a `MemoryError` that
            suggests `path=` or a larger `every_n_steps`. Defaults to 512.
        tensorboard_dir: folder for TensorBoard event files (per variable gradient norms and
            histograms, and the loss), or None. Defaults to None.
        snapshots: bool, also record the weights and the optimizer's variables before each logged
            step (`weights()`, `optimizer_state()`), held in memory, so that any step can be
            replayed exactly (e.g. by `kerasbp.compare`). Defaults to False.

    Raises:
        TypeError, ValueError: for bad arguments.
        RuntimeError: at `fit` on a backend other than TensorFlow, or a model without optimizer.

    Example:
        >>> logger = GradientLogger()
        >>> model.fit(X, y, epochs=2, callbacks=[logger])  # doctest: +SKIP
        >>> logger.stats["sequential/dense_0/kernel"]["norm"]  # doctest: +SKIP
    """

    def __init__(self, every_n_steps=1, record="stats", on_nonfinite="warn", path=None, max_memory_mb=512, tensorboard_dir=None, snapshots=False):
        keras.callbacks.Callback.__init__(self)
        GradientLog.__init__(self)
        self.every_n_steps = check_positive_int("every_n_steps", every_n_steps)
        self.record = check_choice("record", record, ("stats", "full"))
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("warn", "stop", "raise"))
        self.async_safe = self.on_nonfinite == "warn"  # see on_train_batch_end
        self.path = None if path is None else check_output_path("path", path) if not os.path.isdir(path) else os.fspath(path)
        if self.path is not None and self.record != "full":
            raise ValueError(f'`path` streams full gradients and needs record="full". Received: record={record!r}, path={path!r}')
        if self.path is not None and os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"`path` must be a folder (new or existing) to stream gradients to. Received a file: path={self.path!r}")
        self.max_memory_mb = check_positive_float("max_memory_mb", max_memory_mb)
        self.tensorboard_dir = None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        if self.tensorboard_dir is not None:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ImportError("`tensorboard_dir` needs the tensorboard package: pip install 'kerasbp[tensorboard]'") from None
        self.snapshots = bool(snapshots)
        self._buffers = self._key = self._hooked_train_function = None
        self._n_read = self._unread_calls = 0
        self._rows_per_call = 1
        self._pending = True
        self._warned_nonfinite = False
        self._writer = None
        self._files = None  # open while training: one raw file per variable
        self._file_names = None
        self.missing = []  # names of variables whose gradient came back None

    # ----------------------------------------------------------------- attaching to the model
    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                f"GradientLogger supports the TensorFlow backend only; Keras is running on {keras.backend.backend()!r}. "
                "Set KERAS_BACKEND=tensorflow before importing keras."
            )
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise RuntimeError("GradientLogger needs a compiled model with an optimizer")
        if not model.built:
            raise ValueError(
                "GradientLogger needs a built model, so that its variables exist before training: "
                "start it with keras.Input(shape) or call model.build(input_shape) first"
            )
        variables = list(model.trainable_weights)
        names = [v.path for v in variables]
        if self.names and names != self.names:
            raise ValueError(f"this GradientLogger already holds a log of variables {self.names}; the model has {names}. Use a new logger")
        layer_of = {}
        for layer in model._flatten_layers(include_self=False):
            for v in layer.trainable_weights:
                layer_of[id(v)] = layer
        self.names = names
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]
        self.layers = [layer_of[id(v)].name if id(v) in layer_of else "" for v in variables]
        self.activations = [_activation_name(layer_of.get(id(v))) for v in variables]
        if self._grads is None:
            self._grads = [[] for _ in variables]
        if self._alive is None:
            # Dead units are tracked for relu layers' kernels: a unit whose gradient stays zero.
            self._alive = [np.zeros(v.shape[-1:], bool) if len(v.shape) >= 2 and a == "relu" else None for v, a in zip(variables, self.activations, strict=True)]

        detach(model)  # hooks left by an interrupted fit
        if not optimizer.built:
            optimizer.build(variables)  # as its first `apply` would; its slot variables now exist
        if self.snapshots:
            self.optimizer_variable_names = [v.path for v in optimizer.variables]
            if self._weights is None:
                self._weights = [[] for _ in variables]
                self._optimizer_state = [[] for _ in optimizer.variables]
        steps_per_call = int(self.params.get("steps_per_call") or getattr(model, "steps_per_execution", 1) or 1)
        keep_full = self.record == "full" or self.tensorboard_dir is not None
        n_params = sum(int(np.prod(s)) for s in self.shapes)
        dtype = tf.float64 if any(v.dtype == "float64" for v in variables) else tf.float32
        # Rows one call of the train function can write. Statistics are small: their buffer holds
        # 256 rows or more, so the host reads it only now and then; full gradients are read after
        # every call.
        self._rows_per_call = steps_per_call // self.every_n_steps + 1
        capacity = self._rows_per_call if keep_full else max(self._rows_per_call, 256)
        buffer_mb = capacity * n_params * dtype.size / 2**20 if keep_full else 0
        if buffer_mb > self.max_memory_mb:
            raise MemoryError(
                f"GradientLogger(record='full') would need {buffer_mb:.1f} MB of device buffer for {capacity} steps per call "
                f"of {n_params} parameters, over max_memory_mb={self.max_memory_mb:g}. Lower steps_per_execution or raise max_memory_mb"
            )
        key = (id(model), id(optimizer), capacity, keep_full)
        if self._buffers is None or self._key != key:
            # New device buffers, so the train function is traced anew with them; a logger used
            # again on the same model and optimizer keeps its buffers and its traced function.
            tracked = [alive is not None for alive in self._alive]
            self._buffers = _Buffers(variables, capacity, keep_full, dtype, tracked, optimizer.variables if self.snapshots else None)
            self._key, self._n_read, self._hooked_train_function = key, 0, None
        self._fit_start = int(optimizer.iterations.numpy())
        self._steps_per_epoch = self.params.get("steps") or None
        if self.path is not None:
            # The first fit starts the files afresh (an earlier log there is replaced); later
            # fits of this logger append to them.
            mode = "ab" if self._file_names else "wb"
            os.makedirs(self.path, exist_ok=True)
            self._file_names = [os.path.join(self.path, f"grad_{j}.bin") for j in range(len(variables))]
            self._files = [open(name, mode) for name in self._file_names]
        if self.tensorboard_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
        _attach(model, optimizer, self)
        optimizer._kerasbp_plain_train_function = model.train_function
        if self._hooked_train_function is None:
            model.make_train_function(force=True)
            self._hooked_train_function = model.train_function
        model.train_function = self._hooked_train_function

    def on_train_batch_begin(self, batch, logs=None):
        # Read the device buffer only when the coming call could overflow it: a read per step
        # would cost more than the statistics.
        if (self._unread_calls + 1) * self._rows_per_call > self._buffers.capacity:
            self._collect()
        self._pending = True  # the train function is about to run: rows will follow
        self._unread_calls += 1

    def on_train_batch_end(self, batch, logs=None):
        # "stop" and "raise" must act at the step a non-finite gradient appears. With "warn" this
        # does nothing, and `async_safe` lets Keras run it without waiting for the step's logs.
        if self.on_nonfinite != "warn":
            self._collect()

    def on_epoch_end(self, epoch, logs=None):
        self._collect()

    def on_train_end(self, logs=None):
        self.detach()

    def detach(self):
        """Unhook the optimizer and flush files. `on_train_end` calls it; call it yourself after
        an interrupted `fit` before training the model without this logger."""
        self._sync()
        if self.model is not None:
            detach(self.model)
        for f in self._files or []:
            f.close()
        self._files = None
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ reading the device
    def _sync(self):
        if self._buffers is not None:
            self._pending = True
            self._collect()

    def _collect(self):
        """Read the rows written on the device since the last read and append them."""
        if not self._pending:
            return  # nothing ran since the last read (e.g. epoch ends replayed by kerasbp.train)
        self._pending = False
        self._unread_calls = 0
        buf = self._buffers
        count = int(buf.count.numpy())
        new = count - self._n_read
        if new <= 0:
            return
        if new > buf.capacity:
            raise RuntimeError(
                f"GradientLogger lost {new - buf.capacity} logged steps: {new} steps ran between two reads but the "
                f"buffer holds {buf.capacity}. Was the model trained on with this logger's hooks still attached after an "
                "interrupted fit? Call logger.detach() after an interruption"
            )
        slots = np.arange(self._n_read, count) % buf.capacity
        self._n_read = count
        steps = buf.steps.numpy()[slots]
        losses = buf.losses.numpy()[slots].astype(np.float64)
        stats = buf.stats.numpy()[slots].astype(np.float64)
        if self._steps_per_epoch:
            epochs = (steps - self._fit_start) // self._steps_per_epoch
        else:
            epochs = np.zeros_like(steps)
        fulls = None
        if buf.full is not None:
            fulls = [g.numpy()[slots] for g in buf.full]
            if self.record == "full":
                self._store_full(fulls)
        for j, alive in enumerate(buf.alive):
            if alive is not None:
                self._alive[j] = alive.numpy().copy()
        if buf.weights is not None:
            for chunks, w in zip(self._weights, buf.weights, strict=True):
                chunks.append(w.numpy()[slots])
            for chunks, w in zip(self._optimizer_state, buf.optimizer_state, strict=True):
                chunks.append(w.numpy()[slots])
        for key, value in (("steps", steps), ("epochs", epochs), ("losses", losses), ("stats", stats)):
            self._chunks[key].append(value)
        self._cache.clear()
        if self._writer is not None:
            self._write_tensorboard(steps, losses, stats, fulls)
        self._check_nonfinite(steps, epochs, stats)

    def _store_full(self, fulls):
        if self._files is not None:
            for f, g in zip(self._files, fulls, strict=True):
                f.write(np.ascontiguousarray(g).tobytes())
            return
        held = sum(sum(c.nbytes for c in chunks) for chunks in self._grads) + sum(g.nbytes for g in fulls)
        if held > self.max_memory_mb * 2**20:
            self.model.stop_training = True
            raise MemoryError(
                f"GradientLogger(record='full') holds {held / 2**20:.1f} MB of gradients, over max_memory_mb="
                f"{self.max_memory_mb:g}. Pass path=... to stream them to disk, or raise every_n_steps"
            )
        for chunks, g in zip(self._grads, fulls, strict=True):
            chunks.append(g)

    def _grad_array(self, j):
        if self._file_names is None:
            return GradientLog._grad_array(self, j)
        if self._files is not None:
            self._files[j].flush()
        shape = self.shapes[j]
        dtype = np.dtype(self._buffers.dtype.as_numpy_dtype if self._buffers else np.float32)
        file = self._file_names[j]
        n = os.path.getsize(file) // (dtype.itemsize * max(1, math.prod(shape)))
        if n == 0:
            return np.zeros((0, *shape), dtype)
        return np.memmap(file, dtype=dtype, mode="r", shape=(n, *shape))

    def _write_tensorboard(self, steps, losses, stats, fulls):
        import tensorflow as tf

        with self._writer.as_default():
            for r, step in enumerate(steps):
                step = int(step)
                tf.summary.scalar("loss", losses[r], step=step)
                for j, name in enumerate(self.names):
                    tf.summary.scalar(f"gradient_norm/{name}", stats[r, j, _STAT["norm"]], step=step)
                    if fulls is not None:
                        tf.summary.histogram(f"gradients/{name}", fulls[j][r], step=step)

    def _check_nonfinite(self, steps, epochs, stats):
        bad = stats[:, :, _STAT["nonfinite"]] > 0
        if not bad.any() or self._warned_nonfinite:
            return
        r, j = np.argwhere(bad)[0]
        message = (
            f"non-finite gradient at step {int(steps[r])} (epoch {int(epochs[r])}) in layer {self.layers[j]!r}, "
            f"variable {self.names[j]!r}: {int(stats[r, j, _STAT['nonfinite']])} NaN/Inf entries"
        )
        self.first_nonfinite = {"step": int(steps[r]), "epoch": int(epochs[r]), "layer": self.layers[j], "variable": self.names[j]}
        self._warned_nonfinite = True
        if self.on_nonfinite == "raise":
            self.detach()
            raise FloatingPointError(message)
        if self.on_nonfinite == "stop":
            self.model.stop_training = True
            message += "; training stopped"
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


class _Buffers:
    """Ring buffers on the device that the wrapped `optimizer.apply` writes each logged step into."""

    def __init__(self, variables, capacity, keep_full, dtype, tracked, optimizer_variables=None):
        import tensorflow as tf

        def var(shape, dt, name):
            return tf.Variable(tf.zeros(shape, dt), trainable=False, name=f"kerasbp_{name}")

        self.capacity, self.dtype = capacity, dtype
        self.count = var((), tf.int64, "count")
        self.steps = var((capacity,), tf.int64, "steps")
        self.losses = var((capacity,), dtype, "losses")
        self.stats = var((capacity, len(variables), len(STATS)), dtype, "stats")
        self.full = [var((capacity, *v.shape), dtype, f"grad_{j}") for j, v in enumerate(variables)] if keep_full else None
        self.alive = [var(v.shape[-1:], tf.bool, f"alive_{j}") if track else None for j, (v, track) in enumerate(zip(variables, tracked, strict=True))]
        self.weights = self.optimizer_state = None
        if optimizer_variables is not None:
            self.weights = [var((capacity, *v.shape), v.dtype, f"weights_{j}") for j, v in enumerate(variables)]
            self.optimizer_state = [var((capacity, *v.shape), v.dtype, f"optimizer_{j}") for j, v in enumerate(optimizer_variables)]


def _statistics(grads, weight_squares, updates, dtype, tracked):
    """The `STATS` of every gradient, and whether each unit's gradient was nonzero.

    Written for few operations and few passes over memory, which is what costs on a CPU: per
    variable, five reductions (the sum and the sum of squares of the gradient, its minimum and
    maximum, the sum of squares of the update), and one more where the units whose gradient is
    nonzero are tracked; then the arithmetic on those numbers for all variables at once. The standard deviation is `sqrt(E[g^2] - E[g]^2)`, whose relative error
    grows like `(mean / std)^2` times the dtype's epsilon. NaN/Inf entries are counted (one more
    pass) only at steps where some sum of squares is not finite.

    Args:
        grads: list of tensors, the gradient of each variable.
        weight_squares: tensor `(n_variables,)`, the sum of squares of each variable before the step.
        updates: list of tensors, each variable's change in the step (`w_after - w_before`).
        dtype: the dtype to compute in.
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.

    Returns:
        `(stats, nonzero)`: a tensor `(n_variables, len(STATS))`, and a list with, per
        variable, None or (if tracked) a bool tensor over its last axis (units): some gradient
        entry of that unit was nonzero.
    """
    import tensorflow as tf

    raw, nonzero = [], []
    for g, update, track in zip(grads, updates, tracked, strict=True):
        g, update = tf.cast(g, dtype), tf.cast(update, dtype)
        rest = list(range(g.shape.rank - 1))
        nonzero.append(tf.reduce_any(tf.not_equal(g, 0), axis=rest) if track else None)  # (units,)
        raw += [
            tf.reduce_sum(g),
            2 * tf.nn.l2_loss(g),  # sum of squares in one operation, no temporary
            tf.reduce_min(g),
            tf.reduce_max(g),
            2 * tf.nn.l2_loss(update),
        ]
    total, squares, low, high, update_squares = tf.unstack(tf.reshape(tf.stack(raw), [len(grads), 5]), axis=1)
    size = tf.constant([float(np.prod(g.shape)) for g in grads], dtype)  # (n_variables,)
    mean = total / size
    weight_norm = tf.sqrt(tf.cast(weight_squares, dtype))
    counts = tf.cond(
        tf.reduce_all(tf.math.is_finite(squares)),
        lambda: tf.zeros([len(grads)], dtype),
        lambda: tf.stack([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), dtype)) for g in grads]),
    )
    stats = tf.stack(
        [
            tf.sqrt(squares),
            mean,
            tf.sqrt(tf.maximum(squares / size - mean * mean, 0)),
            low,
            high,
            tf.maximum(tf.abs(low), tf.abs(high)),
            counts,
            weight_norm,
            tf.sqrt(update_squares) / weight_norm,
        ],
        axis=1,
    )  # (n_variables, len(STATS))
    return stats, nonzero


def _attach(model, optimizer, logger):
    """Wrap `optimizer.apply` and `optimizer.scale_loss` on the instance to feed `logger`'s buffers."""
    import tensorflow as tf

    buf = logger._buffers
    model_vars = list(model.trainable_weights)
    index = {id(v): j for j, v in enumerate(model_vars)}
    original_apply, original_scale_loss = optimizer.apply, optimizer.scale_loss
    original_assign_add, original_assign_sub = optimizer.assign_add, optimizer.assign_sub
    pending = {}
    every_n = logger.every_n_steps
    # Each variable's change in a step: Keras's own optimizers make it with assign_add and
    # assign_sub, whose increments are captured here, so no copy of the weights is needed. With
    # weight decay, constraints or another optimizer, it is `w_after - w_before` from a copy.
    from_increments = (
        type(optimizer).__module__.startswith("keras.src.optimizers")
        and not optimizer.weight_decay
        and all(v.constraint is None for v in model_vars)
        and buf.weights is None
    )
    increments = {}
    # The TensorFlow backend updates the tf.Variable behind each Keras variable.
    updated = {id(getattr(v, "value", v)): j for j, v in enumerate(model_vars)} | index

    def assign_add(variable, value):
        if id(variable) in updated and "on" in increments:
            increments.setdefault(updated[id(variable)], []).append((1, value))
        return original_assign_add(variable, value)

    def assign_sub(variable, value):
        if id(variable) in updated and "on" in increments:
            increments.setdefault(updated[id(variable)], []).append((-1, value))
        return original_assign_sub(variable, value)

    def change(j):
        """The variable's change in this step from its captured increments (signs matter only
        when there are several)."""
        parts = increments.get(j)
        if not parts:
            return tf.zeros(())
        if len(parts) == 1:
            return parts[0][1]  # its norm is all the statistics need
        return tf.add_n([value if sign > 0 else -value for sign, value in parts])

    def scale_loss(loss):
        pending["loss"] = loss  # the step's loss, before loss scaling
        return original_scale_loss(loss)

    def apply(grads, trainable_variables=None):
        grads = list(grads)
        tvars = list(trainable_variables) if trainable_variables is not None else list(optimizer._trainable_variables)
        by_model_index = {index[id(v)]: (g, v) for g, v in zip(grads, tvars, strict=True) if id(v) in index}
        missing = [model_vars[j].path for j in range(len(model_vars)) if by_model_index.get(j, (None,))[0] is None]
        if missing and missing != logger.missing:
            logger.missing = missing
            warnings.warn(
                f"GradientLogger: no gradient for {missing}: the loss does not depend on them (or was computed "
                "outside the gradient tape); their rows hold NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        loss = pending.pop("loss", None)
        if loss is None or not (tf.executing_eagerly() or getattr(loss, "graph", None) is tf.compat.v1.get_default_graph()):
            loss = tf.constant(float("nan"))
        step = tf.cast(optimizer.iterations, tf.int64)  # before this step's increment
        log_now = None if every_n == 1 else tf.equal(tf.math.floormod(step, every_n), 0)

        def weight_squares():
            return 2 * tf.stack([tf.nn.l2_loss(tf.cast(v.value, buf.dtype)) for v in model_vars])

        squares = weight_squares() if every_n == 1 else tf.cond(log_now, weight_squares, lambda: tf.zeros([len(model_vars)], buf.dtype))
        befores = None if from_increments else [tf.identity(v.value) for v in model_vars]
        state_before = [tf.identity(v.value) for v in optimizer.variables] if buf.optimizer_state is not None else None
        increments.clear()
        increments["on"] = True
        try:
            result = original_apply(grads, trainable_variables)
        finally:
            del increments["on"]

        def write():
            slot = tf.math.floormod(buf.count, buf.capacity)
            present = [j for j in range(len(model_vars)) if j in by_model_index and by_model_index[j][0] is not None]
            grads_present = [tf.convert_to_tensor(by_model_index[j][0]) for j in present]  # IndexedSlices -> dense
            rows = tf.fill([len(model_vars), len(STATS)], tf.constant(float("nan"), buf.dtype))
            if present:
                tracked = [buf.alive[j] is not None for j in present]
                if from_increments:
                    updates = [change(j) for j in present]
                else:
                    updates = [model_vars[j].value - befores[j] for j in present]
                values, nonzero = _statistics(grads_present, tf.gather(squares, present), updates, buf.dtype, tracked)
                rows = values if len(present) == len(model_vars) else tf.tensor_scatter_nd_update(rows, [[j] for j in present], values)
                for j, units in zip(present, nonzero, strict=True):
                    if units is not None:
                        buf.alive[j].assign(tf.logical_or(buf.alive[j], units))
            if buf.full is not None:
                for j, g in zip(present, grads_present, strict=True):
                    buf.full[j].scatter_nd_update([[slot]], tf.cast(g, buf.dtype)[None])
            if buf.weights is not None:
                for target, value in zip(buf.weights + buf.optimizer_state, befores + state_before, strict=True):
                    target.scatter_nd_update([[slot]], value[None])
            buf.stats.scatter_nd_update([[slot]], rows[None])
            buf.losses.scatter_nd_update([[slot]], tf.cast(tf.reshape(loss, [1]), buf.dtype))
            buf.steps.scatter_nd_update([[slot]], tf.reshape(step, [1]))
            buf.count.assign_add(1)
            return tf.constant(True)

        if every_n == 1:
            write()
        else:
            tf.cond(log_now, write, lambda: tf.constant(False))
        return result

    optimizer.apply = apply
    optimizer.scale_loss = scale_loss
    optimizer.assign_add = assign_add
    optimizer.assign_sub = assign_sub
    optimizer._kerasbp_token = id(buf)
    optimizer._kerasbp_originals = True


def detach(model):
    """Remove a GradientLogger's hooks from `model.optimizer`, if any, and drop the traced train
    function so the next `fit` traces a clean one."""
    optimizer = getattr(model, "optimizer", None)
    originals = getattr(optimizer, "_kerasbp_originals", None)
    if originals is None:
        return
    for name in ("apply", "scale_loss", "assign_add", "assign_sub"):
        if name in optimizer.__dict__:
            del optimizer.__dict__[name]
    del optimizer.__dict__["_kerasbp_originals"]
    del optimizer.__dict__["_kerasbp_token"]
    model.train_function = optimizer.__dict__.pop("_kerasbp_plain_train_function", None)
