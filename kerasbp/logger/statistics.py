"""The per-step gradient reductions, written once with `keras.ops` for the JAX and torch captures.

`step_reductions` reduces one train step's gradients to the numbers behind the
`kerasbp.logger.log.STATS` (the columns of `kerasbp.logger.hooks.RAW`) inside the compiled train
step (JAX) or on the device in the same eager step (torch): no host round trip; the host
finishes them (`hooks.finish_statistics`). `clipping_acted` says whether an optimizer's clipping
changed the gradients. The TensorFlow capture (`capture.py`) has its own `tf` version of
`step_reductions`, with fewer graph operations; the numbers are the same.
"""

from keras import ops



def sum_squares(g, dtype):
    """Scalar tensor: the sum of the squares of `g`'s entries, computed in `dtype`."""
    g = ops.reshape(ops.cast(g, dtype), (-1,))
    return ops.vdot(g, g)  # one BLAS dot: faster than a square and a reduction on XLA's CPU backend


def step_reductions(grads, dtype, tracked):
    """The first five `hooks.RAW` columns of every gradient, and whether each unit's gradient was nonzero.

    Per variable: four reductions of the gradient (sum, sum of squares, minimum, maximum), and
    one more where the units whose gradient is nonzero are tracked. NaN/Inf entries are counted
    (one more pass) only at steps where some sum of squares is not finite. The arithmetic on
    these numbers (norms, mean, standard deviation, the loss scale's division) is done on the
    host by `hooks.finish_statistics`.

    Args:
        grads: list of tensors, the gradient of each variable (still multiplied by the loss scale).
        dtype: str, the dtype to compute in (`"float32"` or `"float64"`).
        tracked: list of bools, per variable: whether to find its units with a nonzero gradient.

    Returns:
        `(table, nonzero)`: a tensor `(n_variables, 5)` (sum, sum of squares, min, max, count of
        NaN/Inf entries), and a list with, per variable, None or (if tracked) a bool tensor over
        its last axis (units): some gradient entry of that unit was nonzero.

    Example:
        >>> import numpy as np
        >>> table, _ = step_reductions([np.array([3.0, -4.0])], "float32", [False])
        >>> ops.convert_to_numpy(table).tolist()
        [[-1.0, 25.0, -4.0, 3.0, 0.0]]
    """
    n = len(grads)
    raw, nonzero = [], []
    for g, track in zip(grads, tracked, strict=True):
        g = ops.cast(g, dtype)
        rest = tuple(range(len(g.shape) - 1))
        nonzero.append(ops.any(ops.not_equal(g, 0), axis=rest) if track and rest else (ops.not_equal(g, 0) if track else None))  # (units,)
        raw += [ops.sum(g), sum_squares(g, dtype), ops.min(g), ops.max(g)]
    table = ops.reshape(ops.stack(raw), (n, 4))
    counts = ops.cond(
        ops.all(ops.isfinite(table[:, 1])),
        lambda: ops.zeros((n, 1), dtype),
        lambda: ops.reshape(ops.stack([ops.sum(ops.cast(ops.logical_not(ops.isfinite(ops.cast(g, dtype))), dtype)) for g in grads]), (n, 1)),
    )
    return ops.concatenate([table, counts], axis=1), nonzero


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
