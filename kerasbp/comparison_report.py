"""`ComparisonReport`: the per-step differences `kerasbp.compare` finds between Keras and the
NumPy twin, the tolerances that judge them, and how each difference is measured (see
`kerasbp.comparison`). NumPy only: a report can be read, drawn and saved without Keras.
"""

import csv
import io
import json
import math

import numpy as np

from kerasbp.files import atomic_write

#: Relative tolerances of the teacher-forced comparison, by dtype. float32: losses agree to about
#: 1e-7 of their size and updates to a few ulps of theirs; gradients carry float32 rounding
#: amplified by cancellation in the batch sums and by `a * (1 - a)` for saturated sigmoids
#: (measured up to ~2e-5 between two float32 implementations of the same formula).
#: float64: everything agrees to ~1e-13 or better, so 1e-10 leaves room only for a real difference.
#: Keras's schedules compute in float32 whatever the dtype, so their tolerance is 4 float32 ulps
#: of the largest rate in both (measured: up to 1.5e-7 for the cosine schedules, whose float32
#: `cos` in TensorFlow is not correctly rounded; exact for the others).
TOLERANCES = {
    "float32": {"loss": 1e-5, "learning_rate": 4.8e-7, "gradient": 1e-4, "weights": 1e-4, "moving": 1e-4},
    "float64": {"loss": 1e-10, "learning_rate": 4.8e-7, "gradient": 1e-10, "weights": 1e-10, "moving": 1e-10},
}

#: The Keras backends on which a float64 model is judged with float32's tolerances: Keras 3.15
#: computes some of its float64 operations in float32 there (`keras.backend.result_type` maps
#: float64 to float32 on every backend but TensorFlow: `BIT64_TO_BIT32_DTYPE` in
#: `keras/src/backend/common/dtypes.py`), e.g. the mean of the loss and `1/n` of a batch that is
#: no power of two. Measured with `compare` on the XOR network and the linear model, SGD, Adam
#: and RMSprop, float64: teacher-forced loss up to 1.7e-7, gradient up to 2.1e-7 and weights up
#: to 6.7e-6 (Adam) relative, on both backends; float64's tolerances hold for none of these.
FLOAT32_ACCURATE_FLOAT64 = ("jax", "torch")


def tolerances(dtype, backend="tensorflow"):
    """The relative tolerances (`TOLERANCES`) that judge a comparison in `dtype` on Keras's
    `backend`: float32's for float64 on the backends of `FLOAT32_ACCURATE_FLOAT64`."""
    return dict(TOLERANCES["float32" if backend in FLOAT32_ACCURATE_FLOAT64 else dtype])


#: What is compared at each step; "learning_rate" only with a schedule, "moving" only for
#: models with BatchNormalization.
_QUANTITIES = ("loss", "learning_rate", "gradient", "weights", "moving")


def relative_difference(diff, scale):
    """`diff / scale`, with a zero scale handled soundly.

    A zero scale means nothing was expected to differ (a loss of 0, a zero gradient, a step that
    did not move the weights): no difference there is 0, and any difference is infinitely large
    relative to it, so it is flagged whatever the tolerance.

    Args:
        diff: float >= 0 (or NaN), an absolute difference.
        scale: float >= 0, the size it is judged against.

    Returns:
        float: `diff / scale` when `scale > 0`; otherwise 0.0 for `diff == 0`, `inf` for
        `diff > 0`, and NaN for a NaN `diff`.

    Example:
        >>> relative_difference(1e-3, 2e-3), relative_difference(0.0, 0.0), relative_difference(1e-9, 0.0)
        (0.5, 0.0, inf)
    """
    if scale > 0:
        return diff / scale
    return math.inf if diff > 0 else float(diff)


class ComparisonReport:
    """Per-step differences between Keras and the NumPy twin, and the verdict.

    Attributes:
        dtype: str, `"float32"` or `"float64"`.
        backend: str, the Keras backend compared (`"tensorflow"`, `"jax"`, `"torch"`).
        tolerances: dict `{"loss", "learning_rate", "gradient", "weights", "moving"}` of relative
            tolerances.
        names: list of str, the trainable variables in `model.trainable_weights` order.
        moving_names: list of str, the BatchNormalization moving means and variances in
            `model.non_trainable_weights` order (empty without BatchNormalization).
        steps: int, the number of optimizer steps compared.
        epochs, batch_size: the run's settings.
        keras_losses: float64 array `(steps,)`, each step's batch loss before its update.
        twin_losses: float64 array `(steps,)`, the free-running twin's.
        teacher, free: dicts of arrays for each mode: `"loss_abs"`, `"loss_rel"`,
            `"learning_rate_abs"`, `"learning_rate_rel"` (zeros without a schedule) of shape
            `(steps,)`, and `"gradient_abs"`, `"gradient_rel"`, `"weights_abs"`, `"weights_rel"`
            of shape `(steps, n_variables)` (weights after the step), and `"moving_abs"`,
            `"moving_rel"` of shape `(steps, n_moving)`.
        optimizer: str, the twin optimizer with its hyperparameters, e.g.
            `"Adam(learning_rate=0.05, beta_1=0.9, ...)"`, for display.
        optimizer_name: str, the Keras optimizer class, e.g. `"Adam"` (`"SGD"`, `"Adam"` or
            `"RMSprop"`), for titles and grouping.
        loss: str, the twin loss class, `"MeanSquaredError"` or `"BinaryCrossentropy"`.
        diverged_at: None, or the step at which Keras's loss, gradients or weights became NaN or
            Inf; the steps before it are compared, and the report is not ok.
    """

    def __init__(self, diverged_at, dtype, names, keras_losses, twin_losses, teacher, free, epochs, batch_size, optimizer, loss, optimizer_name, moving_names=(), scheduled=False, backend="tensorflow"):
        self.diverged_at = diverged_at
        self.dtype = dtype
        self.backend = backend
        self.tolerances = tolerances(dtype, backend)
        self.names = names
        self.moving_names = list(moving_names)
        self.scheduled = bool(scheduled)
        self.keras_losses, self.twin_losses = keras_losses, twin_losses
        self.teacher, self.free = teacher, free
        self.steps = len(keras_losses)
        self.epochs, self.batch_size = epochs, batch_size
        self.optimizer, self.loss = optimizer, loss
        self.optimizer_name = optimizer_name

    @property
    def _quantities(self):
        skip = {"learning_rate"} if not self.scheduled else set()
        if not self.moving_names:
            skip.add("moving")
        return tuple(q for q in _QUANTITIES if q not in skip)

    def _worst(self, mode):
        # weights_rel is the difference beyond 2 ulps, relative to the update (module docstring)
        data = getattr(self, mode)
        return {q: float(np.max(data[f"{q}_rel"])) if self.steps else 0.0 for q in self._quantities}

    def failures(self, mode="teacher"):
        """Every `(step, variable, quantity, abs, rel)` over tolerance in `mode`, in step order."""
        data, out = getattr(self, mode), []
        for k in range(self.steps):
            for q in ("loss", "learning_rate"):
                if data[f"{q}_rel"][k] > self.tolerances[q]:
                    out.append((k, None, q, float(data[f"{q}_abs"][k]), float(data[f"{q}_rel"][k])))
            for q, names in (("gradient", self.names), ("weights", self.names), ("moving", self.moving_names)):
                for j, name in enumerate(names):
                    if data[f"{q}_rel"][k, j] > self.tolerances[q]:
                        out.append((k, name, q, float(data[f"{q}_abs"][k, j]), float(data[f"{q}_rel"][k, j])))
        return out

    @property
    def first_failure(self):
        """The first teacher-forced `(step, variable, quantity, abs, rel)` over tolerance, or None."""
        failures = self.failures("teacher")
        return failures[0] if failures else None

    @property
    def ok(self):
        """True when every teacher-forced step agrees within `tolerances` and training did not
        diverge."""
        return self.first_failure is None and self.diverged_at is None

    def summary(self):
        """A readable table: the worst relative difference of each quantity in each mode."""
        teacher, free = self._worst("teacher"), self._worst("free")
        lines = [
            f"Keras vs NumPy twin: {self.steps} steps ({self.epochs} epochs, batch {self.batch_size}), {self.dtype}, "
            f"{self.optimizer}, {self.loss}" + ("" if self.backend == "tensorflow" else f", Keras on {self.backend}"),
            f"{'worst relative difference':28}{'teacher-forced':>16}{'free-running':>15}{'tolerance':>11}",
        ]
        for q in self._quantities:
            label = {"moving": "moving statistics", "learning_rate": "learning rate"}.get(q, q)
            lines.append(f"{label:28}{teacher[q]:16.2e}{free[q]:15.2e}{self.tolerances[q]:11.0e}")
        first = self.first_failure
        if self.diverged_at is not None:
            lines.append(
                f"NOT OK: training diverged at step {self.diverged_at} (Keras's loss, gradients or weights became NaN/Inf); "
                f"the {self.steps} steps before it were compared. Try a smaller learning rate"
            )
        if first is None and self.diverged_at is None:
            lines.append("OK: every step agrees (teacher-forced)")
        elif first is not None:
            step, name, q, a, r = first
            where = f"variable {name!r}" if name else ("the schedule" if q == "learning_rate" else "the loss")
            lines.append(f"NOT OK: first difference at step {step}, {where}, {q}: |diff| {a:.3g}, relative {r:.3g} > {self.tolerances[q]:g}")
        if self.dtype == "float64" and self.backend in FLOAT32_ACCURATE_FLOAT64:
            lines.append(
                f"note: judged with float32's tolerances: Keras on {self.backend} computes some float64 operations in float32 "
                "(keras.backend.result_type maps float64 to float32 on every backend but TensorFlow)"
            )
        over_free = self.failures("free")
        if over_free and first is None:
            lines.append(
                f"note: the free-running twin drifts past tolerance from step {over_free[0][0]} on; each step agrees "
                "when started from Keras's state, so this is amplified rounding, not a wrong step"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    __repr__ = __str__

    def to_dict(self):
        """A JSON-ready dict: settings, tolerances, verdict, worst differences, per-step losses."""
        first = self.first_failure
        return {
            "ok": self.ok,
            "diverged_at": self.diverged_at,
            "dtype": self.dtype,
            "backend": self.backend,
            "steps": self.steps,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "optimizer_name": self.optimizer_name,
            "loss": self.loss,
            "tolerances": self.tolerances,
            "names": self.names,
            "moving_names": self.moving_names,
            "worst": {"teacher": self._worst("teacher"), "free": self._worst("free")},
            "first_failure": None if first is None else dict(zip(("step", "variable", "quantity", "abs", "rel"), first, strict=True)),
            "keras_losses": self.keras_losses.tolist(),
            "twin_losses": self.twin_losses.tolist(),
        }

    def to_csv(self, path):
        """Write one row per step, mode and variable with every difference (atomically).

        A BatchNormalization moving statistic has rows of its own, its differences in the
        `weights_*` columns and the loss and gradient columns empty.
        """

        def write(f):
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow(["step", "mode", "variable", "loss_abs", "loss_rel", "gradient_abs", "gradient_rel", "weights_abs", "weights_rel"])
            for mode in ("teacher", "free"):
                d = getattr(self, mode)
                for k in range(self.steps):
                    for j, name in enumerate(self.names):
                        w.writerow([k, mode, name, d["loss_abs"][k], d["loss_rel"][k], d["gradient_abs"][k, j], d["gradient_rel"][k, j], d["weights_abs"][k, j], d["weights_rel"][k, j]])
                    for j, name in enumerate(self.moving_names):
                        w.writerow([k, mode, name, "", "", "", "", d["moving_abs"][k, j], d["moving_rel"][k, j]])
            text.flush()
            text.detach()

        atomic_write(path, write)

    def to_json(self):
        """`to_dict()` as a JSON string."""
        return json.dumps(self.to_dict())


def changed_differences(before, keras_after, twin_after, n_vars):
    """`(abs, rel)`, each `(steps, n_vars)`: per step and variable, `max |Keras - twin|` after
    the step, and what is left of it beyond 2 ulps of the values (the rounding of `w + change`
    on each side) relative to the size of Keras's change `max |after - before|`."""
    steps = len(keras_after)
    out_abs, out_rel = np.zeros((steps, n_vars)), np.zeros((steps, n_vars))
    for k in range(steps):
        for j in range(n_vars):
            w0, kw = before[k][j], np.asarray(keras_after[k][j], np.float64)
            out_abs[k, j] = a = np.max(np.abs(kw - np.asarray(twin_after[k][j], np.float64)))
            ulps = 2 * float(np.spacing(np.max(np.abs(np.concatenate([np.ravel(w0), kw.ravel()])))))
            out_rel[k, j] = relative_difference(max(0.0, a - ulps), np.max(np.abs(kw - w0)))
    return out_abs, out_rel
