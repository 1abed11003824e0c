"""The gradient noise scale of McCandlish et al. (2018) from gradients at two batch sizes; NumPy only.

With `B_small` examples per small batch and `B_big` per big batch, and the squared norms of the
mean-loss gradients at those sizes, `|G_small|^2` (averaged over the small batches) and
`|G_big|^2`, unbiased estimates of the true gradient's squared norm and of the trace of the
per-example gradient covariance are (McCandlish et al. 2018, appendix A.1):

    |G|^2 ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    S     ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)
    B_simple = S / |G|^2

Both estimates are noisy, so the paper averages `S` and `|G|^2` over steps separately and takes
the ratio of the averages, not the average of the per-step ratios (`ratio_of_means`).

Under data parallelism the replicas' gradients are the small batches and their all-reduced sum
is the big one (`kerasbp/logger/replicas.py`).

References:
    McCandlish, Kaplan, Amodei and the OpenAI Dota Team (2018), "An Empirical Model of
    Large-Batch Training", arXiv:1812.06162, section 2.2 and appendix A.1.
"""

import numpy as np


def two_batch_estimates(b_small, b_big, small_squares, big_squares):
    """Per-step `|G|^2`, `S` and `B_simple` from gradient norms at two batch sizes.

    Args:
        b_small: float array `(n_steps,)` (or a number), examples per small batch.
        b_big: float array `(n_steps,)` (or a number), examples per big batch; must exceed `b_small`.
        small_squares: float array `(n_steps,)`, `|G_small|^2`: the squared L2 norm of a
            small batch's mean-loss gradient, averaged over the small batches of the step.
        big_squares: float array `(n_steps,)`, `|G_big|^2`: the squared L2 norm of the big
            batch's mean-loss gradient.

    Returns:
        dict of float64 arrays `(n_steps,)`: `"g2"` (the estimate of `|G|^2`), `"trace"` (the
        estimate of `S = tr(Sigma)`, per example) and `"b_simple"` (`S / |G|^2`, per step).
        Steps where `b_big <= b_small` (or any input is NaN) are NaN.

    Example:
        >>> est = two_batch_estimates(2, 4, np.array([3.0]), np.array([2.0]))
        >>> float(est["g2"][0]), float(est["trace"][0]), float(est["b_simple"][0])
        (1.0, 4.0, 4.0)
    """
    b_small, b_big, small, big = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (b_small, b_big, small_squares, big_squares)))
    with np.errstate(divide="ignore", invalid="ignore"):
        valid = b_big > b_small
        g2 = np.where(valid, (b_big * big - b_small * small) / (b_big - b_small), np.nan)
        trace = np.where(valid, (small - big) / (1 / b_small - 1 / b_big), np.nan)
        return {"g2": g2, "trace": trace, "b_simple": trace / g2}


def ratio_of_means(trace, g2):
    """The paper's `B_simple` over several steps: the mean of `S` over the mean of `|G|^2`.

    Args:
        trace: float array `(n_steps,)`, per-step estimates of `S`.
        g2: float array `(n_steps,)`, per-step estimates of `|G|^2`.

    Returns:
        float, `mean(trace) / mean(g2)` over the steps where both are finite; NaN when none is.
    """
    trace, g2 = np.asarray(trace, np.float64), np.asarray(g2, np.float64)
    keep = np.isfinite(trace) & np.isfinite(g2)
    if not keep.any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(trace[keep]) / np.mean(g2[keep]))


def from_replicas(batch_sizes, replica_squares, global_squares):
    """Per-step noise-scale estimates from data-parallel replicas: each replica's gradient is a
    small batch, their sum the big one.

    Keras (TensorFlow backend, `tf.distribute`) scales each replica's mean loss by
    `1 / n_replicas` (`keras.src.losses.loss.scale_loss_for_distribution`), so replica `r`'s
    gradient `g_r` is its slice's mean-loss gradient divided by `n_replicas`, and the
    optimizer applies `sum_r g_r`. Hence `B_small = b` (the replica batch), `B_big = n_replicas * b`,
    `|G_small|^2 = mean_r |n_replicas * g_r|^2` and `|G_big|^2 = |sum_r g_r|^2`.

    Args:
        batch_sizes: array `(n_steps, n_replicas)`, examples each replica had.
        replica_squares: float array `(n_steps, n_replicas)`, `|g_r|^2`: the squared global
            L2 norm (all variables) of each replica's gradient as the optimizer received it.
        global_squares: float array `(n_steps,)`, `|sum_r g_r|^2`.

    Returns:
        dict of float64 arrays `(n_steps,)`, as `two_batch_estimates`. Steps whose replicas had
        different batch sizes (a last partial batch), or a single replica, are NaN: there the
        sum of the replicas' gradients is not the big batch's mean-loss gradient.

    Raises:
        ValueError: if the shapes disagree.
    """
    batch_sizes = np.asarray(batch_sizes, np.float64)
    replica_squares = np.asarray(replica_squares, np.float64)
    global_squares = np.asarray(global_squares, np.float64)
    if batch_sizes.ndim != 2 or replica_squares.shape != batch_sizes.shape or global_squares.shape != batch_sizes.shape[:1]:
        raise ValueError(
            "batch_sizes and replica_squares must be (n_steps, n_replicas) and global_squares (n_steps,). Received: "
            f"batch_sizes {batch_sizes.shape}, replica_squares {replica_squares.shape}, global_squares {global_squares.shape}"
        )
    n_replicas = batch_sizes.shape[1]
    even = (batch_sizes == batch_sizes[:, :1]).all(axis=1) & (batch_sizes[:, 0] > 0)
    b = np.where(even, batch_sizes[:, 0], np.nan)
    small = n_replicas**2 * replica_squares.mean(axis=1)
    return two_batch_estimates(b, n_replicas * b, small, global_squares)
