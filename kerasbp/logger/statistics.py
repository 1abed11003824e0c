"""The per-step gradient statistics, written once with `keras.ops` for every backend.

`step_statistics` computes the `kerasbp.logger.log.STATS` of one train step's gradients, in that
order, inside the compiled train step (JAX) or on the device in the same eager step (torch):
no host round trip. `clipping_acted` says whether an optimizer's clipping changed the
gradients. The TensorFlow capture (`capture.py`) has its own `tf` version of both, tuned for
TensorFlow graphs; the numbers are the same formulas.
"""

import math

from keras import ops

from kerasbp.logger.log import STATS


def sum_squares(g, dtype):
    """Scalar tensor: the sum of the squares of `g`'s entries, computed in `dtype`."""
    g = ops.reshape(ops.cast(g, dtype), (-1,))
    return ops.vdot(g, g)  # one BLAS dot: faster than a square and a reduction on XLA's CPU backend


def step_statistics(grads, weight_squares, update_squares, dtype, tracked, scale=None, applied_squares=None):
    """The `STATS` of every gradient, and whether each unit's gradient was nonzero.

    Per variable: four reductions of the gradient (sum, sum of squares, minimum, maximum), and
    one more where the units whose gradient is nonzero are tracked; then the arithmetic on those
    numbers for all variables at once. The standard deviation is `sqrt(E[g^2] - E[g]^2)`, whose
    relative error grows like `(mean / std)^2` times the dtype's epsilon. NaN/Inf entries are
    counted (one more pass) only at steps where some sum of squares is not finite. The loss
    scale divides the reduced numbers, not the gradients: exact for the powers of two that
    `LossScaleOptimizer` uses.

    Args:
        grads: list of tensors, the gradient of each variable (still multiplied by `scale`).
        weight_squares: tensor `(n_variables,)`, the sum of squares of each variable before the step.
        update_squares: tensor `(n_variables,)`, the sum of squares of each variable's change.
        dtype: str, the dtype to compute in (`"float32"` or `"float64"`).
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.
        scale: None, or a scalar (tensor or float): the loss scale that multiplies `grads`.
        applied_squares: None (the update rule received `grads` themselves), or a tensor
            `(n_variables,)`: the sum of squares of the gradient the update rule received.

    Returns:
        `(stats, nonzero)`: a tensor `(n_variables, len(STATS))`, and a list with, per
        variable, None or (if tracked) a bool tensor over its last axis (units): some gradient
        entry of that unit was nonzero.

    Example:
        >>> import numpy as np
        >>> stats, _ = step_statistics([np.array([3.0, -4.0])], np.array([25.0]), np.array([1.0]), "float32", [False])
        >>> float(ops.convert_to_numpy(stats)[0, STATS.index("norm")])
        5.0
    """
    n = len(grads)
    raw, nonzero = [], []
    for g, track in zip(grads, tracked, strict=True):
        g = ops.cast(g, dtype)
        rest = tuple(range(len(g.shape) - 1))
        nonzero.append(ops.any(ops.not_equal(g, 0), axis=rest) if track and rest else (ops.not_equal(g, 0) if track else None))  # (units,)
        raw += [ops.sum(g), sum_squares(g, dtype), ops.min(g), ops.max(g)]
    table = ops.reshape(ops.stack(raw), (n, 4))
    total, squares, low, high = (table[:, i] for i in range(4))  # each (n_variables,)
    counts = ops.cond(
        ops.all(ops.isfinite(squares)),
        lambda: ops.zeros((n,), dtype),
        lambda: ops.stack([ops.sum(ops.cast(ops.logical_not(ops.isfinite(ops.cast(g, dtype))), dtype)) for g in grads]),
    )
    if scale is not None:
        s = ops.cast(scale, dtype)
        total, squares, low, high = total / s, squares / (s * s), low / s, high / s
    size = ops.convert_to_tensor([float(math.prod(g.shape)) for g in grads], dtype)  # (n_variables,)
    mean = total / size
    weight_norm = ops.sqrt(ops.cast(weight_squares, dtype))
    by_name = {
        "norm": ops.sqrt(squares),
        "mean": mean,
        "std": ops.sqrt(ops.maximum(squares / size - mean * mean, 0)),
        "min": low,
        "max": high,
        "max_abs": ops.maximum(ops.abs(low), ops.abs(high)),
        "nonfinite": counts,
        "weight_norm": weight_norm,
        "update_ratio": ops.sqrt(ops.cast(update_squares, dtype)) / weight_norm,
        "applied_norm": ops.sqrt(squares if applied_squares is None else ops.cast(applied_squares, dtype)),
    }
    return ops.stack([by_name[name] for name in STATS], axis=1), nonzero  # (n_variables, len(STATS))


def clipping_acted(optimizer, grads, dtype):
    """Scalar bool tensor: `optimizer._clip_gradients` changes `grads` (its threshold is
    exceeded), or None when the optimizer does not clip. Keras clips with the first of
    `clipnorm`, `global_clipnorm`, `clipvalue` that is set."""
    present = [g for g in grads if g is not None]
    if optimizer.clipnorm and optimizer.clipnorm > 0:  # per tensor: |g| > clipnorm
        return ops.any(ops.stack([ops.sqrt(sum_squares(g, dtype)) > optimizer.clipnorm for g in present]))
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:  # sqrt(sum |g|^2) > global_clipnorm
        return ops.sqrt(ops.sum(ops.stack([sum_squares(g, dtype) for g in present]))) > optimizer.global_clipnorm
    if optimizer.clipvalue and optimizer.clipvalue > 0:  # some |entry| > clipvalue
        return ops.any(ops.stack([ops.max(ops.abs(ops.cast(g, dtype))) > optimizer.clipvalue for g in present]))
    return None
