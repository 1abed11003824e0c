"""The log a `GradientLogger` keeps: `GradientLog`, its `health()` check, and saving and loading it.

NumPy only: a saved log can be read and examined without Keras. The statistics recorded per
variable and step are named in `STATS`; the captures reduce each gradient on the device and
`kerasbp.logger.hooks.finish_statistics` computes the statistics from those sums in that order,
and everything else reads them by name (`GradientLog.stat`), so a statistic is added in those
places only. The per-row columns
(`COLUMNS`) say what the optimizer did with each train step: whether it applied an update, the
learning rate and loss scale of the step, whether clipping acted.
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
from kerasbp.logger import gns, sidecar

#: The statistics recorded per variable per logged step, in this order.
STATS = ("norm", "mean", "std", "min", "max", "max_abs", "nonfinite", "weight_norm", "update_ratio", "applied_norm")

#: The per-example gradient statistics of a step (`GradientLogger(per_example=True)`), the keys
#: of `GradientLog.noise`.
NOISE = ("norm_test", "inner_product_test", "orthogonality_test", "gsnr", "b_simple")

#: What is recorded per step for them: `NOISE`, then the two estimates whose means over steps
#: give `GradientLog.noise_scale()`: `trace_sigma` (S, the trace of the per-example gradient
#: covariance) and `grad_sq` (|G|^2, the squared norm of the true gradient).
NOISE_COLUMNS = (*NOISE, "trace_sigma", "grad_sq")

#: The per-row columns besides the statistics: name -> (dtype, its value in logs saved before
#: the column existed, as a function of their steps; None: every log has it).
COLUMNS = {
    "steps": (np.int64, None),
    "epochs": (np.int64, None),
    "losses": (np.float64, None),
    "iterations": (np.int64, lambda steps: steps + 1),  # old logs: the step was the optimizer's iteration
    "applied": (bool, lambda steps: np.ones(len(steps), bool)),
    "skipped": (bool, lambda steps: np.zeros(len(steps), bool)),
    "clipped": (bool, lambda steps: np.zeros(len(steps), bool)),
    "learning_rates": (np.float64, lambda steps: np.full(len(steps), np.nan)),
    "loss_scales": (np.float64, lambda steps: np.full(len(steps), np.nan)),
}

#: The optimizer's clipping settings a log records (`GradientLog.clipping`).
CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")

#: The statistics recorded per replica with `GradientLogger(per_replica=True)` (those of `STATS`
#: that describe the gradient alone; `kerasbp.logger.replicas` computes them).
REPLICA_STATS = ("norm", "mean", "std", "min", "max", "max_abs", "nonfinite")

#: Columns of `GradientLog.to_csv` with one value per row, before the variable's own.
CSV_ROW_COLUMNS = ("step", "epoch", "iterations", "loss", "applied", "skipped", "clipped", "learning_rate", "loss_scale", "global_norm")


class Health:
    """What `GradientLog.health()` found: a list of flags and the figures behind them.

    Attributes:
        vanishing: bool, the first layer's gradient norm is a tiny fraction of the last layer's.
        exploding: bool, the global gradient norm grew far above its early level in this run
            (or above an absolute threshold, if one was given). Never set by NaN/Inf alone.
        nonfinite: bool, a logged loss or gradient held NaN or Inf at a step whose update was
            applied (or would have been); loss-scale skips are not counted.
        dead_units: dict `{variable name: list of unit indices}` of relu units whose output was
            zero for every example of every logged step.
        skipped: int, steps that a `LossScaleOptimizer` skipped (gradient overflow), which is
            how dynamic loss scaling works, not a fault.
        figures: dict of the numbers behind each flag.
        notes: list of str, facts that are no flag but change how to read the log (e.g. that
            clipping acted per replica under a `tf.distribute` strategy).
    """

    def __init__(self, vanishing, exploding, nonfinite, dead_units, figures, skipped=0):
        self.notes = []  # facts that are no flag (clipping per replica under a strategy)
        self.vanishing = vanishing
        self.exploding = exploding
        self.nonfinite = nonfinite
        self.dead_units = dead_units
        self.skipped = skipped
        self.figures = figures

    @property
    def ok(self):
        """True when nothing is flagged (loss-scale skips are not a flag)."""
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
        if "growth" in f:
            line = (
                f"  {'EXPLODING' if self.exploding else 'exploding: no'} - global gradient norm peaked at {f['max_norm']:.3g} "
                f"(step {f['max_norm_step']}), {f['growth']:.3g}x its median {f['early_median_norm']:.3g} over steps "
                f"{f['early_steps'][0]}-{f['early_steps'][1]} (threshold {f['exploding_growth']:.3g}x"
            )
            if f.get("exploding_norm") is not None:
                line += f", or a norm above {f['exploding_norm']:.3g}"
            lines.append(line + ")")
        else:
            lines.append("  exploding: not judged (fewer than 2 logged steps with a finite gradient)")
        if self.nonfinite:
            where = f"variable {f['first_nonfinite_variable']!r}" if f["first_nonfinite_variable"] else "the loss (gradients finite)"
            lines.append(f"  NON-FINITE - first at step {f['first_nonfinite_step']}, {where}")
        else:
            lines.append("  non-finite: none")
        if self.skipped:
            lines.append(
                f"  {self.skipped} steps skipped by loss scaling (gradient overflow: the LossScaleOptimizer lowered its scale "
                "and applied no update, as dynamic loss scaling does)"
            )
        if self.dead_units:
            for name, units in self.dead_units.items():
                lines.append(f"  DEAD UNITS in {name!r}: {len(units)} of {f['units'][name]} (units {units})")
        else:
            lines.append("  dead relu units: none")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


class GradientLog:
    """Gradients recorded at logged train steps: a `GradientLogger`'s data, or one loaded back.

    A row is one train step (one batch handed to the optimizer), whatever the optimizer then did
    with it: a gradient-accumulation micro-step and a step that a `LossScaleOptimizer` skipped
    get rows of their own (`applied` is False there). Rows are appended in chunks while
    training and joined on first read.

    Attributes:
        names: list of str, the variable paths in `model.trainable_weights` order.
        layers: list of str, the layer name of each variable.
        activations: list of str, the activation of each variable's layer ("" when it has none).
        shapes: list of tuples, each variable's shape.
        record: `"stats"` or `"full"`.
        every_n_steps: int, the logging period in train steps.
        optimizer_variable_names: list of str, with snapshots: the optimizer's variables.
        applied_same: bool, the update rule received the (unscaled) loss gradient itself at
            every applied step (no clipping or accumulation), so it is stored once.
        clipping: dict `{"clipnorm", "global_clipnorm", "clipvalue"}` of the optimizer's clipping
            thresholds (None where unset; all None in logs saved before it was recorded).
        per_example: bool, recorded with `GradientLogger(per_example=True)`: `noise`,
            `noise_scale()` and `per_example_norms()` hold the per-example statistics.
        strategy: str, the class name of the `tf.distribute` strategy (or, on JAX, the
            `keras.distribution`) it was recorded under, or None.
        n_replicas: int, that strategy's replicas in sync (1 without one, and under a
            `keras.distribution`, whose train step sees only the reduced gradient).
        per_replica: bool, each replica's gradient was recorded too (`replica_stat`,
            `replica_gradients`).
        notes: list of str, facts about how the gradients were applied that a reader needs
            (e.g. clipping per replica under a strategy); `health()` prints them.
    """

    def __init__(self):
        self.names, self.layers, self.activations, self.shapes = [], [], [], []
        self.record = "stats"
        self.every_n_steps = 1
        self.optimizer_variable_names = []
        self.applied_same = True
        self.clipping = dict.fromkeys(CLIPPING)
        self.per_example = False  # per-example statistics recorded: `noise`, `per_example_norms()`
        self._chunks = {key: [] for key in (*COLUMNS, "stats", "noise", "per_example_norms")}
        self.strategy = None
        self.n_replicas = 1
        self.per_replica = False
        self.notes = []
        self._noise = {}  # the replicas' estimates: name -> list of 1-D float64 chunks, one value per row
        self._replica_stats = []  # chunks (n, n_replicas, n_variables, len(REPLICA_STATS))
        self._replica_grads = None  # list per variable of chunks (n, n_replicas, *shape)
        self._cache = {}
        self._grads = None  # list per variable of chunks (n, *shape), or None
        self._applied_grads = None  # the same for the applied gradients when not `applied_same`
        self._alive = None  # list per variable: bool array over units (last axis), or None
        self._weights = None  # with snapshots: list per variable of chunks (weights before each step)
        self._optimizer_state = None  # with snapshots: list per optimizer variable of chunks

    def _sync(self):
        """Hook for `GradientLogger`: read rows still on the device before a read."""

    def _append(self, stats, noise=None, per_example_norms=None, **columns):
        """Append rows: `stats` `(n, n_variables, len(STATS))`, every column of `COLUMNS` `(n,)`,
        and with per-example statistics `noise` `(n, len(NOISE_COLUMNS))` and
        `per_example_norms` `(n, width)`."""
        if set(columns) != set(COLUMNS):
            raise ValueError(f"_append needs the columns {sorted(COLUMNS)}. Received: {sorted(columns)}")
        self._chunks["stats"].append(stats)
        if noise is not None:
            self._chunks["noise"].append(np.asarray(noise, np.float64))
            self._chunks["per_example_norms"].append(np.asarray(per_example_norms, np.float64))
        for key, value in columns.items():
            self._chunks[key].append(np.asarray(value, COLUMNS[key][0]))
        self._cache.clear()

    def _joined(self, key, empty_shape, dtype):
        self._sync()
        if key not in self._cache:
            chunks = self._chunks[key]
            self._cache[key] = np.concatenate(chunks) if chunks else np.zeros(empty_shape, dtype)
        return self._cache[key]

    def _column(self, key):
        return self._joined(key, (0,), COLUMNS[key][0])

    @property
    def steps(self):
        """1-D int64 array `(n_logged,)`: the train step (0-based) of each logged row.

        Train steps count the batches handed to the optimizer, strictly increasing and
        continuing over the `fit` calls of one logger. On the plain path (no accumulation, no
        loss-scale skip) they equal the optimizer's iterations before the step."""
        return self._column("steps")

    @property
    def epochs(self):
        """1-D int64 array `(n_logged,)`: the epoch (0-based, within its `fit` call) of each row."""
        return self._column("epochs")

    @property
    def losses(self):
        """1-D float64 array `(n_logged,)`: the loss of each logged step's batch, before its update
        (and before loss scaling). NaN where the train step's loss could not be seen."""
        return self._column("losses")

    @property
    def iterations(self):
        """1-D int64 array `(n_logged,)`: `optimizer.iterations` after the row's step (with
        gradient accumulation Keras counts applied updates there; a loss-scale skip leaves it)."""
        return self._column("iterations")

    @property
    def applied(self):
        """1-D bool array `(n_logged,)`: the optimizer applied an update at this step (False for
        a loss-scale overflow skip and for accumulation micro-steps that only accumulate)."""
        return self._column("applied")

    @property
    def skipped(self):
        """1-D bool array `(n_logged,)`: a `LossScaleOptimizer` skipped this step because its
        scaled gradient overflowed (normal under dynamic loss scaling)."""
        return self._column("skipped")

    @property
    def clipped(self):
        """1-D bool array `(n_logged,)`: clipping (`clipnorm`, `global_clipnorm` or `clipvalue`)
        changed the gradient the update rule received: its threshold was exceeded. False on rows
        that applied nothing."""
        return self._column("clipped")

    @property
    def learning_rates(self):
        """1-D float64 array `(n_logged,)`: the learning rate the update used (a schedule
        evaluated at that step), NaN where nothing was applied."""
        return self._column("learning_rates")

    @property
    def loss_scales(self):
        """1-D float64 array `(n_logged,)`: the loss scale in effect (the loss gradient was
        divided by it before logging); 1.0 without loss scaling."""
        return self._column("loss_scales")

    @property
    def global_norms(self):
        """1-D float64 array `(n_logged,)`: the global L2 norm of each row's loss gradient,
        `sqrt(sum over variables of norm^2)` (variables without a gradient left out)."""
        norms = self.stat("norm")  # (n_logged, n_variables)
        has = ~np.isnan(self.stat("nonfinite"))  # variables whose gradient existed
        with np.errstate(invalid="ignore", over="ignore"):
            return np.sqrt(np.where(has, norms * norms, 0.0).sum(axis=1))

    def replica_stats_array(self):
        """float64 array `(n_logged, n_replicas, n_variables, len(REPLICA_STATS))`, with `per_replica=True`.

        Raises:
            ValueError: if the log was recorded without `per_replica=True`.
        """
        self._need_replicas("replica_stats_array()")
        self._sync()
        if "replica_stats" not in self._cache:
            chunks = self._replica_stats
            empty = (0, self.n_replicas, len(self.names), len(REPLICA_STATS))
            self._cache["replica_stats"] = np.concatenate(chunks) if chunks else np.zeros(empty)
        return self._cache["replica_stats"]

    def replica_stat(self, name):
        """One statistic of each replica's gradient: float64 array `(n_logged, n_replicas, n_variables)`.

        The replica's gradient is the one the optimizer's `apply` received in that replica (its
        slice's mean-loss gradient times `1 / n_replicas`, before clipping), so the replicas'
        gradients add up to `gradients()`.

        Args:
            name: str, one of `REPLICA_STATS`.

        Raises:
            ValueError: for another name, or a log recorded without `per_replica=True`.
        """
        name = check_choice("name", name, REPLICA_STATS)
        return self.replica_stats_array()[:, :, :, REPLICA_STATS.index(name)]

    def replica_gradients(self):
        """Each replica's whole gradient, with `per_replica=True` and `record="full"`.

        Returns:
            list, in `model.trainable_weights` order, of float arrays `(n_logged, n_replicas,
            *variable.shape)`: what each replica's `apply` received (unscaled), before
            clipping; summed over axis 1 they give `gradients()`.

        Raises:
            ValueError: if the log was recorded without `per_replica=True` or `record="full"`.
        """
        self._need_replicas("replica_gradients()")
        self._need_full("replica_gradients()")
        self._sync()
        return [self._replica_array(j) for j in range(len(self.names))]

    def _replica_array(self, j):
        key = ("replica", j)
        if key not in self._cache:
            chunks = self._replica_grads[j] if self._replica_grads is not None else []
            empty = np.zeros((0, self.n_replicas, *self.shapes[j]), np.float32)
            self._cache[key] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else empty
        return self._cache[key]

    def _need_replicas(self, what):
        if not self.per_replica:
            raise ValueError(f"{what} needs GradientLogger(per_replica=True). This log was recorded without it")

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

        `norm` is the L2 norm of the loss gradient, `mean`/`std`/`min`/`max`/`max_abs` its
        entries' statistics, `nonfinite` the number of NaN/Inf entries, `weight_norm` the L2 norm
        of the variable before the step, `update_ratio` = `|w_after - w_before| / |w_before|`
        (inf or NaN when the weights were zero; 0 where nothing was applied) and `applied_norm`
        the L2 norm of the gradient the update rule received (NaN where nothing was applied). A
        variable whose gradient was `None` has NaN rows.
        """
        a = self.stats_array()
        return {name: {s: a[:, j, i] for i, s in enumerate(STATS)} for j, name in enumerate(self.names)}

    @property
    def noise(self):
        """Per-example gradient statistics per logged step (`GradientLogger(per_example=True)`).

        A dict `{name: 1-D float64 array (n_logged,)}`: the keys of `NOISE` with
        `per_example=True`, and under a `tf.distribute` strategy with more than one replica the
        estimates from the replicas' gradients (McCandlish et al. 2018 with two batch sizes, the
        replica batch and the global batch; `kerasbp.logger.gns.from_replicas`):
        `"b_simple_replicas"` (the per-step `S / |G|^2`), `"trace_replicas"` (`S`) and
        `"g2_replicas"` (`|G|^2`), NaN at steps whose replicas had unequal batches. Empty
        without either. With per-example gradients `g_i` (i = 1..B) of the
        examples' own losses (as Keras weighs them), their mean `g` (the batch gradient) and
        `p_i = g_i . g`, over all trainable variables::

            norm_test          = sqrt((sum_i |g_i|^2 - B |g|^2) / ((B - 1) B |g|^2))
            inner_product_test = sqrt((sum_i p_i^2 - B |g|^4) / ((B - 1) B |g|^4))
            orthogonality_test = sqrt((sum_i |g_i|^2 - sum_i p_i^2 / |g|^2) / ((B - 1) B |g|^2))
            gsnr               = mean over parameters with var > 0 of g^2 / var,
                                 var = mean_i g_i^2 - g^2 (per parameter)
            b_simple           = S / |G|^2,   S = (mean_i |g_i|^2 - |g|^2) / (1 - 1/B),
                                 |G|^2 = (B |g|^2 - mean_i |g_i|^2) / (B - 1)

        (negative rounding residues under the square roots count as 0). Every entry is NaN for
        a step with `B = 1`.

        References:
            Schneider, Dangel, Hennig 2021, "Cockpit" (the three tests, GSNR); McCandlish,
            Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training" (B_simple,
            with B_small = 1 and B_big = B).
        """
        self._sync()
        if "noise_dict" not in self._cache:  # ("noise" caches the per-example table)
            replicas = {key: np.concatenate(chunks) for key, chunks in self._noise.items() if chunks}
            table = self._noise_table() if self.per_example else None
            per_example = {name: table[:, i] for i, name in enumerate(NOISE)} if self.per_example else {}
            self._cache["noise_dict"] = per_example | replicas
        return dict(self._cache["noise_dict"])

    def _append_noise(self, **values):
        """Append the replicas' per-row estimates to `noise` (each a 1-D array, a value per appended row)."""
        for key, value in values.items():
            self._noise.setdefault(key, []).append(np.asarray(value, np.float64))
        self._cache.clear()

    def _noise_table(self):
        return self._joined("noise", (0, len(NOISE_COLUMNS)), np.float64)

    def per_example_norms(self):
        """The L2 norm of each example's own gradient (over all trainable variables) per logged step.

        Returns:
            float64 array `(n_logged, batch_size)`, `batch_size` the largest batch logged; the
            rows of smaller batches (the last partial one) are padded with NaN.

        Raises:
            ValueError: for a log recorded without `GradientLogger(per_example=True)`.
        """
        if not self.per_example:
            raise ValueError("per_example_norms() needs GradientLogger(per_example=True). This log was recorded without it")
        self._sync()
        key = "per_example_norms"
        if key not in self._cache:
            chunks = self._chunks[key]
            width = max((c.shape[1] for c in chunks), default=0)
            padded = [np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=np.nan) for c in chunks]
            self._cache[key] = np.concatenate(padded) if padded else np.zeros((0, 0), np.float64)
        return self._cache[key]

    def noise_scale(self, source=None):
        """The gradient noise scale B_simple over the logged steps, as McCandlish et al. average it.

        `mean(S) / mean(|G|^2)` over the steps where both are finite (a ratio of means, steadier
        than the mean of the per-step `b_simple`), from one of two sets of per-step unbiased
        estimates of `S` (the trace of the per-example gradient covariance) and `|G|^2` (the
        squared norm of the true gradient):

        - `"per_example"`: `GradientLogger(per_example=True)`, with B_small = 1 and B_big = the
          step's batch size;
        - `"replicas"`: the replicas of a `tf.distribute` strategy, with B_small = the replica
          batch and B_big = the global batch.

        Args:
            source: `"per_example"`, `"replicas"`, or None for the one the log holds
                (`"per_example"` when it holds both). Defaults to None.

        Returns:
            float, in examples (NaN when no step has finite estimates, e.g. batches of one).

        Raises:
            ValueError: for an unknown `source`, or a log without those estimates.

        References:
            McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch
            Training", appendix A.1.
        """
        has = {"per_example": self.per_example, "replicas": "trace_replicas" in self.noise}
        if source is None:
            source = "per_example" if has["per_example"] or not has["replicas"] else "replicas"
        if source not in has:
            raise ValueError(f"`source` must be None, 'per_example' or 'replicas'. Received: source={source!r}")
        if not has[source]:
            raise ValueError(
                f"noise_scale(source={source!r}) needs estimates this log does not hold: record with GradientLogger(per_example=True), "
                "or train under a tf.distribute strategy with 2 or more replicas"
            )
        if source == "replicas":
            return gns.ratio_of_means(self.noise["trace_replicas"], self.noise["g2_replicas"])
        table = self._noise_table()
        return gns.ratio_of_means(table[:, NOISE_COLUMNS.index("trace_sigma")], table[:, NOISE_COLUMNS.index("grad_sq")])

    def gradients(self):
        """The whole loss gradients (unscaled, before clipping), with `record="full"`.

        Returns:
            list, in `model.trainable_weights` order, of float arrays shaped
            `(n_logged, *variable.shape)` (memory-mapped when streamed to a folder).

        Raises:
            ValueError: if the log was recorded with `record="stats"`.
        """
        self._need_full("gradients()")
        self._sync()
        return [self._grad_array(j) for j in range(len(self.names))]

    def applied_gradients(self):
        """The whole gradients the update rule received (after unscaling, accumulation and
        clipping, before weight decay), with `record="full"`; rows of steps that applied no
        update are NaN.

        Returns:
            list, in `model.trainable_weights` order, of float arrays `(n_logged, *variable.shape)`.

        Raises:
            ValueError: if the log was recorded with `record="stats"`.
        """
        self._need_full("applied_gradients()")
        self._sync()
        if not self.applied_same:
            return [self._applied_array(j) for j in range(len(self.names))]
        grads = self.gradients()
        applied = self.applied
        if applied.all():
            return grads
        out = []
        for g in grads:
            g = np.array(g)
            g[~applied] = np.nan
            out.append(g)
        return out

    def _need_full(self, what):
        if self.record != "full":
            raise ValueError(f'{what} needs GradientLogger(record="full"). This log was recorded with record="stats"')

    def _grad_array(self, j):
        return self._chunk_array(("grad", j), self._grads, j)

    def _applied_array(self, j):
        return self._chunk_array(("applied", j), self._applied_grads, j)

    def _chunk_array(self, key, per_variable, j):
        if key not in self._cache:
            chunks = per_variable[j] if per_variable is not None else []
            # One chunk (a loaded log) is used as it is: a memory map stays one.
            self._cache[key] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros((0, *self.shapes[j]), np.float32)
        return self._cache[key]

    def last_gradients(self):
        """The whole loss gradients of the last logged step (with `record="full"`), without
        joining the earlier ones.

        Returns:
            list in `model.trainable_weights` order of arrays `variable.shape`.

        Raises:
            ValueError: if the log was recorded with `record="stats"` or holds no step.
        """
        self._need_full("last_gradients()")
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
            list of arrays `(n_logged, *shape)`, one per variable of `optimizer.variables`, in
            that order: for a Keras optimizer `iteration`, then `learning_rate` (only when the
            learning rate is a number, not a schedule: see `learning_rates`), then its slots
            (gradient accumulators, momentums, velocities); a `LossScaleOptimizer` puts its
            own (`iteration`, `learning_rate`, `step_counter`, `dynamic_scale`) before its inner
            optimizer's. Then any variable the inner optimizer holds without Keras tracking it
            (Nadam's `u_product` inside a `LossScaleOptimizer`), so that a step can be replayed.

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

        Columns: `CSV_ROW_COLUMNS` (`step, epoch, iterations, loss, applied, skipped, clipped,
        learning_rate, loss_scale, global_norm`; booleans as 0/1), then `variable, layer` and
        every name in `STATS`. The file is written atomically (`kerasbp.files.atomic_write`).

        Args:
            path: str or path-like, the CSV file to write; its folder must exist.

        Raises:
            ValueError, TypeError: for a path that is not a file in an existing folder.
        """
        a = self.stats_array()
        per_row = [
            self.steps,
            self.epochs,
            self.iterations,
            self.losses,
            self.applied,
            self.skipped,
            self.clipped,
            self.learning_rates,
            self.loss_scales,
            self.global_norms,
        ]

        def cell(value):
            if isinstance(value, (bool, np.bool_)):
                return int(value)
            if isinstance(value, (int, np.integer)):
                return int(value)
            return repr(float(value))

        def write(f):
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow([*CSV_ROW_COLUMNS, "variable", "layer", *STATS])
            for r in range(len(a)):
                row = [cell(column[r]) for column in per_row]
                for j, name in enumerate(self.names):
                    w.writerow([*row, name, self.layers[j], *(repr(float(v)) for v in a[r, j])])
            text.flush()
            text.detach()

        atomic_write(path, write)

    def to_npz(self, path):
        """Write everything (and, with `record="full"`, the gradient arrays `grad_<i>` and, where
        they differ from them, `applied_<i>`) to `path`.

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
            "applied_same": bool(self.applied_same),
            "clipping": self.clipping,
            "per_example": bool(self.per_example),
            "noise": list(NOISE_COLUMNS),
            "strategy": self.strategy,
            "n_replicas": int(self.n_replicas),
            "per_replica": bool(self.per_replica),
            "notes": list(self.notes),
        }
        arrays = {key: self._column(key) for key in COLUMNS}
        arrays |= {"stats": self.stats_array(), "meta": np.array(json.dumps(meta))}
        if self.per_example:
            arrays |= {"noise": self._noise_table(), "per_example_norms": self.per_example_norms()}
        for j, alive in enumerate(self._alive or []):
            if alive is not None:
                arrays[f"alive_{j}"] = alive
        noise = self.noise
        arrays.update({f"noise_{key}": noise[key] for key in self._noise})  # the replicas' estimates
        if self.per_replica:
            arrays["replica_stats"] = self.replica_stats_array()
            if gradients:
                arrays.update({f"replica_grad_{j}": np.asarray(g) for j, g in enumerate(self.replica_gradients())})
        if gradients:
            arrays.update({f"grad_{j}": np.asarray(g) for j, g in enumerate(self.gradients())})
            if not self.applied_same:
                arrays.update({f"applied_{j}": np.asarray(g) for j, g in enumerate(self.applied_gradients())})
        if self._weights is not None:
            arrays.update({f"weights_{j}": w for j, w in enumerate(self.weights())})
            arrays.update({f"optimizer_{j}": w for j, w in enumerate(self.optimizer_state())})
            arrays["optimizer_variable_names"] = np.array(self.optimizer_variable_names, dtype=str)
        return arrays

    def health(self, vanishing_ratio=1e-3, exploding_growth=100.0, exploding_norm=None):
        """Flag vanishing, exploding and non-finite gradients, and dead relu units.

        - Non-finite: a logged loss or gradient held NaN or Inf (the first such step is named),
          leaving out the steps a `LossScaleOptimizer` skipped, which are counted apart
          (`Health.skipped`): overflow skips are how dynamic loss scaling works.
        - Exploding, judged relative to the run so that the scale of the target does not trip
          it: over the logged steps with a finite gradient (skips left out), the largest global
          gradient norm after the first tenth of them, divided by the median over that first
          tenth, exceeds `exploding_growth`; or, if `exploding_norm` is given, a global norm
          exceeds it. NaN/Inf alone sets `nonfinite`, never `exploding`.
        - Vanishing: the median over logged steps of `|grad(first kernel)| / |grad(last kernel)|`
          is below `vanishing_ratio` (kernels are the variables with 2 or more dimensions).
        - Dead units: units of a relu layer (last axis of its kernel) whose output was zero for
          every example of every logged step. The output is read before any Dropout that
          follows, so units that were only dropped are not dead.

        Args:
            vanishing_ratio: positive float. Defaults to 1e-3.
            exploding_growth: positive float, the growth factor of the global gradient norm over
                its early median that counts as exploding. Defaults to 100.
            exploding_norm: None or positive float, an absolute global gradient norm that counts
                as exploding. Defaults to None (growth only).

        Returns:
            `Health`, printable.

        Raises:
            TypeError, ValueError: for thresholds that are not positive finite numbers.
        """
        vanishing_ratio = check_positive_float("vanishing_ratio", vanishing_ratio)
        exploding_growth = check_positive_float("exploding_growth", exploding_growth)
        if exploding_norm is not None:
            exploding_norm = check_positive_float("exploding_norm", exploding_norm)
        steps, skipped = self.steps, self.skipped
        figures = {
            "n_logged": len(steps),
            "vanishing_ratio": vanishing_ratio,
            "exploding_growth": exploding_growth,
            "exploding_norm": exploding_norm,
            "n_skipped": int(skipped.sum()),
        }
        norms = self.stat("norm")  # (n_logged, n_variables)
        kernels = [j for j, s in enumerate(self.shapes) if len(s) >= 2]
        vanishing = False
        if len(kernels) >= 2 and len(steps):
            first, last = kernels[0], kernels[-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.nanmedian(norms[:, first] / norms[:, last])) if np.isfinite(norms[:, [first, last]]).any() else float("nan")
            figures.update(first_kernel=self.names[first], last_kernel=self.names[last], first_last_ratio=ratio)
            vanishing = bool(ratio < vanishing_ratio)
        exploding = self._exploding(figures, exploding_growth, exploding_norm)
        bad = (self.stat("nonfinite") > 0) & ~skipped[:, None]  # (n_logged, n_variables)
        bad_rows = bad.any(axis=1) | (~np.isfinite(self.losses) & ~skipped)
        nonfinite = bool(bad_rows.any())
        if nonfinite:
            r = int(np.flatnonzero(bad_rows)[0])
            variable = self.names[int(np.flatnonzero(bad[r])[0])] if bad[r].any() else None
            figures.update(first_nonfinite_step=int(steps[r]), first_nonfinite_variable=variable)
        dead, units = {}, {}
        for j, alive in enumerate(self._alive or []):
            if alive is not None and len(self.shapes[j]) >= 2 and self.activations[j] == "relu" and len(steps):
                units[self.names[j]] = int(alive.size)
                never = np.flatnonzero(~alive).tolist()
                if never:
                    dead[self.names[j]] = never
        figures["units"] = units
        health = Health(vanishing, exploding, nonfinite, dead, figures, skipped=figures["n_skipped"])
        health.notes = list(self.notes)
        return health

    def _exploding(self, figures, growth_limit, norm_limit):
        """Judge exploding gradients from the global norms; fill in the figures."""
        g = self.global_norms
        keep = np.isfinite(g) & ~self.skipped
        g, steps = g[keep], self.steps[keep]
        if len(g) < 2:
            return False
        k = max(1, len(g) // 10)
        early = float(np.median(g[:k]))
        later = int(np.argmax(g[k:])) + k
        peak = float(g[later])
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = peak / early if early > 0 else (float("inf") if peak > 0 else 1.0)
        figures.update(
            early_median_norm=early,
            early_steps=(int(steps[0]), int(steps[k - 1])),
            max_norm=float(g.max()),
            max_norm_step=int(steps[int(np.argmax(g))]),
            growth=float(growth),
        )
        return bool(growth > growth_limit or (norm_limit is not None and figures["max_norm"] > norm_limit))


#: In a folder that a `GradientLogger(path=...)` streamed to: the log without its gradients.
FOLDER_LOG = "log.npz"


def gradient_file(folder, j, kind="grad"):
    """The raw file of variable `j`'s gradients in a streaming folder (rows of `shape`, C order);
    `kind` is `"grad"` (loss gradients) or `"applied"` (applied gradients)."""
    return os.path.join(folder, f"{kind}_{j}.bin")


def load_gradient_log(path):
    """Read a log written by `GradientLog.to_npz`, or the folder a `GradientLogger(path=...)` streamed to.

    Logs saved before a column or statistic existed load with what they imply: `iterations`
    = `steps + 1`, `applied` True, `skipped` and `clipped` False, and NaN for `learning_rates`,
    `loss_scales` and the `applied_norm` statistic.

    Args:
        path: str or path-like of the `.npz` file, or of the streaming folder (its gradients are
            memory-mapped, not read into memory).

    Returns:
        `GradientLog` with the same steps, epochs, losses, columns, stats, dead-unit tracking
        and (if recorded) gradients, weights and optimizer state. Where `path` was never written
        (the run was killed) but its sidecar `path + ".partial"` holds chunks, the log is
        recovered from them (`kerasbp.logger.sidecar.recover`) with a warning saying how many steps.

    Raises:
        FileNotFoundError: if `path` does not exist (or a folder holds no log); saying so where
            its run was stopped before it saved a step (an empty sidecar).
        ValueError: if the file is not a kerasbp gradient log.
    """
    if not os.path.exists(path):
        recovered = sidecar.recover(path)  # a run killed before it wrote `path`
        if recovered is not None:
            with tempfile.TemporaryDirectory() as folder:
                np.savez(os.path.join(folder, "recovered.npz"), **recovered)
                return load_gradient_log(os.path.join(folder, "recovered.npz"))
        _refuse_empty_sidecar(path)
    folder = None
    if os.path.isdir(path):
        folder, path = os.fspath(path), os.path.join(path, FOLDER_LOG)
        if not os.path.isfile(path):
            recovered = sidecar.recover(path)  # a streaming run killed before it wrote the folder's log
            if recovered is None:
                _refuse_empty_sidecar(path)
                raise FileNotFoundError(f"`path` is a folder without a kerasbp gradient log ({FOLDER_LOG}). Received: path={folder!r}")
            with tempfile.TemporaryDirectory() as scratch:
                np.savez(os.path.join(scratch, FOLDER_LOG), **recovered)
                return _read(os.path.join(scratch, FOLDER_LOG), folder)
    return _read(path, folder)


def _refuse_empty_sidecar(path):
    """Raise FileNotFoundError if the log `path` is missing but its sidecar folder is there without
    a whole chunk: its run was stopped before it saved any step."""
    if os.path.isdir(sidecar.sidecar_path(path)):
        raise FileNotFoundError(
            f"`path` was not written: the run logging to it was stopped before it saved any logged step (its sidecar "
            f"{sidecar.sidecar_path(path)!r} holds none). Received: path={os.fspath(path)!r}"
        )


def _read(path, folder):
    """The log in the `.npz` file `path`; its whole gradients memory-mapped from `folder`'s raw
    files when it describes a streaming folder (`folder` not None)."""
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
        log.applied_same = bool(meta.get("applied_same", True))
        log.clipping = dict.fromkeys(CLIPPING) | meta.get("clipping", {})
        log.strategy, log.n_replicas = meta.get("strategy"), int(meta.get("n_replicas", 1))
        log.per_replica, log.notes = bool(meta.get("per_replica", False)), list(meta.get("notes", []))
        log._noise = {key[len("noise_") :]: [data[key]] for key in data.files if key.startswith("noise_")}
        if log.per_replica:
            log._replica_stats = [data["replica_stats"]]
            if log.record == "full" and folder is None:
                log._replica_grads = [[data[f"replica_grad_{j}"]] for j in range(len(log.names))]
        steps = data["steps"]
        columns = {key: data[key] if key in data else default(steps) for key, (_, default) in COLUMNS.items()}
        saved = data["stats"]  # (n, n_variables, len(saved names)): map by name
        stats = np.full((*saved.shape[:2], len(STATS)), np.nan)
        for i, name in enumerate(meta.get("stats", STATS[: saved.shape[2]])):
            if name in STATS:
                stats[:, :, STATS.index(name)] = saved[:, :, i]
        log.per_example = bool(meta.get("per_example", False)) and "noise" in data
        noise = norms = None
        if log.per_example:
            saved_noise = data["noise"]
            noise = np.full((len(saved_noise), len(NOISE_COLUMNS)), np.nan)
            for i, name in enumerate(meta.get("noise", NOISE_COLUMNS)):
                if name in NOISE_COLUMNS:
                    noise[:, NOISE_COLUMNS.index(name)] = saved_noise[:, i]
            norms = data["per_example_norms"]
        log._append(stats, noise=noise, per_example_norms=norms, **columns)
        log._alive = [data[f"alive_{j}"] if f"alive_{j}" in data else None for j in range(len(log.names))]
        if log.record == "full" and folder is None:
            log._grads = [[data[f"grad_{j}"]] for j in range(len(log.names))]
            if not log.applied_same:
                log._applied_grads = [[data[f"applied_{j}"]] for j in range(len(log.names))]
        if "optimizer_variable_names" in data:
            log.optimizer_variable_names = data["optimizer_variable_names"].tolist()
            log._weights = [[data[f"weights_{j}"]] for j in range(len(log.names))]
            log._optimizer_state = [[data[f"optimizer_{j}"]] for j in range(len(log.optimizer_variable_names))]
        dtype = np.dtype(meta.get("grad_dtype", "float32"))
    if folder is not None:
        n = len(log.steps)

        def mapped(kind):
            return [[np.memmap(gradient_file(folder, j, kind), dtype=dtype, mode="r", shape=(n, *shape))] if n else [] for j, shape in enumerate(log.shapes)]

        log._grads = mapped("grad")
        if not log.applied_same:
            log._applied_grads = mapped("applied")
        if log.per_replica and log.record == "full":
            log._replica_grads = [
                [np.memmap(gradient_file(folder, j, "replica"), dtype=dtype, mode="r", shape=(n, log.n_replicas, *shape))] if n else []
                for j, shape in enumerate(log.shapes)
            ]
    return log
