"""The arithmetic of per-example gradient statistics, in `keras.ops`: one definition for every backend.

The TensorFlow capture (`per_example.py`, inside the traced train step), the JAX capture
(`per_example_jax.py`, a second pass inside the jitted step) and the torch capture
(`per_example_torch.py`, eagerly) record, per Dense layer, its input `A` `(batch, n_in)` and the
delta `D = dL/dz` of its pre-activation `(batch, n_out)`, and hand them here with the batch
gradient. The closed forms (BackPACK, Dangel et al. 2020; the definitions of the statistics:
Schneider et al. 2021, McCandlish et al. 2018) are written out in `per_example.py`'s docstring.
What no backend can compute per example is refused here (`check_model`), without TensorFlow.
"""

import keras
from keras import ops

from kerasbp.logger.log import NOISE_COLUMNS


def _layers(model):
    return list(model._flatten_layers(include_self=False))


def check_model(model):
    """Refuse what per-example gradients cannot be computed for, naming it.

    Args:
        model: a built, compiled `keras.Model` (any backend; `per_example.check_model`,
            `per_example_jax.check_jax_model` and `per_example_torch.check_torch_model` add what
            each backend cannot do).

    Returns:
        `(dense, generic)`: a list of `(layer, kernel_index, bias_index or None)` for the Dense
        layers with trainable weights, and a list of `(layer, [variable indices])` for the other
        layers that own trainable variables (the vectorized fallback); indices into
        `model.trainable_weights`.

    Raises:
        ValueError: for a `BatchNormalization` layer in training mode (it couples the examples
            of a batch: per-example gradients are not defined); a recurrent layer
            (`keras.layers.RNN`); a trainable variable outside the model's layers; a layer
            other than Dense that draws random numbers (the fallback cannot replay them), runs
            in mixed precision, or holds variables beside sublayers that hold some; a Dense
            layer with LoRA or quantization; a
            loss whose reduction is not `"sum_over_batch_size"` (then the batch gradient is not
            the mean of the examples' gradients); a model under a `tf.distribute` strategy.
    """
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            raise ValueError(
                f"GradientLogger(per_example=True) cannot compute per-example gradients through BatchNormalization layer "
                f"{layer.name!r}: in training mode it normalizes with the batch's statistics, which couples the examples, so "
                "an example's own gradient is not defined. Freeze it (layer.trainable = False: Keras then uses its moving "
                "statistics) or use per_example=False"
            )
    for layer in _layers(model):
        if isinstance(layer, keras.layers.RNN) and layer.trainable_weights:
            raise ValueError(
                f"GradientLogger(per_example=True) does not support recurrent layers: the cell of layer {layer.name!r} "
                f"({type(layer).__name__}) runs once per time step inside a loop. Use per_example=False"
            )
    owner = {}
    for layer in _layers(model):  # parents before children: the innermost layer owns a variable
        for v in layer.trainable_weights:
            owner[id(v)] = layer
    index = {id(v): j for j, v in enumerate(model.trainable_weights)}
    dense, generic = [], []
    for j, v in enumerate(model.trainable_weights):
        if id(v) not in owner:
            raise ValueError(
                "GradientLogger(per_example=True) computes per-example gradients layer by layer. Received a trainable "
                f"variable {v.path!r} of the model itself, outside its layers. Use per_example=False"
            )
    owners = list({id(layer): layer for layer in owner.values()}.values())
    for layer in owners:
        if type(layer) is not keras.layers.Dense:
            seeded = [name for name, value in vars(layer).items() if isinstance(value, keras.random.SeedGenerator)]
            if seeded:
                raise ValueError(
                    f"GradientLogger(per_example=True) cannot replay the random numbers of layer {layer.name!r} "
                    f"({type(layer).__name__}: it holds a SeedGenerator, {seeded[0]!r}) in its per-example fallback, which "
                    "recomputes the layer per example. Use per_example=False"
                )
            inner = [other.name for other in layer._flatten_layers(include_self=False) if any(o is other for o in owners)]
            if inner:
                raise ValueError(
                    f"GradientLogger(per_example=True) cannot recompute layer {layer.name!r} ({type(layer).__name__}) per example: "
                    f"it holds trainable variables of its own and layers that do too ({inner}). Use per_example=False"
                )
            if layer.compute_dtype != layer.variable_dtype:
                raise ValueError(
                    f"GradientLogger(per_example=True) supports mixed precision in Dense layers only. Received: layer {layer.name!r} "
                    f"({type(layer).__name__}) with dtype policy {layer.dtype_policy.name!r}"
                )
            generic.append((layer, [index[id(v)] for v in layer.trainable_weights]))
            continue
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise ValueError(
                f"GradientLogger(per_example=True) does not support LoRA or quantized Dense layers. Received: layer {layer.name!r}"
            )
        if not layer.kernel.trainable:
            raise ValueError(f"GradientLogger(per_example=True) needs the kernel of Dense layer {layer.name!r} trainable when its bias is")
        bias = layer.bias if layer.bias is not None and layer.bias.trainable else None
        dense.append((layer, index[id(layer.kernel)], None if bias is None else index[id(bias)]))
    losses = model.loss if isinstance(model.loss, (list, tuple)) else list(model.loss.values()) if isinstance(model.loss, dict) else [model.loss]
    for loss in losses:
        reduction = getattr(loss, "reduction", "sum_over_batch_size")
        if isinstance(loss, keras.losses.Loss) and reduction != "sum_over_batch_size":
            raise ValueError(
                "GradientLogger(per_example=True) needs losses with reduction='sum_over_batch_size' (the batch gradient is then "
                f"the mean of the examples' own gradients). Received: {type(loss).__name__} with reduction={reduction!r}"
            )
    if getattr(model, "_distribute_strategy", None) is not None:
        raise ValueError("GradientLogger(per_example=True) does not support a tf.distribute strategy yet. Received a model built under one")
    return dense, generic


def check_dense_input(layer, shape):
    """Refuse a Dense `layer` called on an input of `shape` that is not 2-D `(batch, features)`:
    the closed forms take one input row per example."""
    if len(shape) != 2:
        raise ValueError(
            "GradientLogger(per_example=True) supports Dense layers on 2-D inputs (batch, features). Received: "
            f"layer {layer.name!r} called on an input of shape {tuple(shape)}"
        )


def a_g_d(a, g, d, gram):
    """`(B,)`: `a_i^T G d_i` for each example, `a` `(B, n_in)`, `G` `(n_in, n_out)`, `d` `(B, n_out)`.

    Directly, `sum((A @ G) * D, axis=1)`: `B n_in n_out` multiplications. Where `G = A^T D` (no
    weight penalty: `gram=True`) also as `sum((A A^T) * (D D^T), axis=1)` (`a_i^T A^T D d_i =
    sum_j (a_i . a_j) (d_j . d_i)`): `B^2 (n_in + n_out)`, fewer when `B < n_in n_out / (n_in +
    n_out)`; the cheaper is taken at run time (B may vary)."""
    n_in, n_out = int(a.shape[-1]), int(d.shape[-1])

    def direct():
        return ops.sum(ops.matmul(a, g) * d, axis=1)

    if not gram:
        return direct()

    def kernels():
        return ops.sum(ops.matmul(a, ops.transpose(a)) * ops.matmul(d, ops.transpose(d)), axis=1)

    batch = ops.shape(a)[0]
    return ops.cond(batch * (n_in + n_out) < n_in * n_out, kernels, direct)


def gsnr_terms(g, m2):
    """For one variable's batch gradient `g` and per-parameter `m2 = mean_i g_i^2` (same shape):
    `(sum of g^2 / var over the parameters with var = m2 - g^2 > 0, their count, |g|^2)`, scalars."""
    g2 = g * g
    var = m2 - g2
    has = var > 0
    ratio = ops.where(has, g2 / var, 0.0)  # the quotients where var <= 0 (inf, NaN) are not selected
    return ops.sum(ratio), ops.sum(ops.cast(has, g.dtype)), ops.sum(g2)


def dense_terms(a, d, g_w, g_b, kernel_penalty, bias_penalty):
    """One Dense layer's share of the sums behind the statistics.

    Args:
        a: `(B, n_in)`, the layer's input in the step.
        d: `(B, n_out)`, the delta of its pre-activation (unscaled by any loss scale).
        g_w: `(n_in, n_out)`, the batch gradient of the kernel.
        g_b: `(n_out,)` or None (no trainable bias, or no gradient for it).
        kernel_penalty, bias_penalty: bool, a weight penalty adds its gradient `r` to every
            example's gradient (`r = G_W - A^T D`, `r_b = g_b - sum_i d_i`).

    Returns:
        `(sq, p, p_shift, ratio_sum, count, gg)`: `(B,)` `|g_i|^2` and the part of `g_i . g`
        that varies with i; scalars: the part common to all i, the GSNR's sum and count (see
        `gsnr_terms`) and `|g|^2`, all over the layer's variables.
    """
    B = ops.cast(ops.shape(a)[0], a.dtype)
    a2, d2 = a * a, d * d
    d2_sum = ops.sum(d2, axis=1)  # (B,)
    sq = B * B * ops.sum(a2, axis=1) * d2_sum
    p = B * a_g_d(a, g_w, d, gram=not kernel_penalty)  # B a_i^T G d_i
    p_shift = ops.zeros((), a.dtype)
    m2_w = B * ops.matmul(ops.transpose(a2), d2)  # (n_in, n_out): mean_i g_i^2
    parts = [(g_w, m2_w)]
    if kernel_penalty:
        r_w = g_w - ops.matmul(ops.transpose(a), d)  # the penalty's gradient (n_in, n_out)
        sq = sq + 2 * B * ops.sum(ops.matmul(a, r_w) * d, axis=1) + ops.sum(r_w * r_w)
        p_shift = p_shift + ops.sum(r_w * g_w)
        parts[0] = (g_w, m2_w + 2 * r_w * (g_w - r_w) + r_w * r_w)
    if g_b is not None:
        sq = sq + B * B * d2_sum
        p = p + B * ops.matmul(d, g_b)
        m2_b = B * ops.sum(d2, axis=0)
        if bias_penalty:
            r_b = g_b - ops.sum(d, axis=0)
            sq = sq + 2 * B * ops.matmul(d, r_b) + ops.sum(r_b * r_b)
            p_shift = p_shift + ops.sum(r_b * g_b)
            m2_b = m2_b + 2 * r_b * (g_b - r_b) + r_b * r_b
        parts.append((g_b, m2_b))
    ratio_sum = count = gg = ops.zeros((), a.dtype)
    for g, m2 in parts:
        r, c, s = gsnr_terms(g, m2)
        ratio_sum, count, gg = ratio_sum + r, count + c, gg + s
    return sq, p, p_shift, ratio_sum, count, gg


def noise_row(B, sum_sq, sum_p2, gg, gsnr):
    """The noise statistics of one step from the sums over its examples.

    Args:
        B: scalar, the batch size.
        sum_sq: scalar, `sum_i |g_i|^2`.
        sum_p2: scalar, `sum_i (g_i . g)^2`.
        gg: scalar, `|g|^2`, g the batch gradient (the mean of the g_i).
        gsnr: scalar, the mean GSNR.

    Returns:
        float64 tensor `(len(NOISE_COLUMNS),)` in the order of `NOISE_COLUMNS`::

            norm_test          = sqrt((sum_i |g_i|^2 - B |g|^2) / ((B - 1) B |g|^2))
            inner_product_test = sqrt((sum_i p_i^2 - B |g|^4) / ((B - 1) B |g|^4))
            orthogonality_test = sqrt((sum_i |g_i|^2 - sum_i p_i^2 / |g|^2) / ((B - 1) B |g|^2))
            S                  = (sum_i |g_i|^2 / B - |g|^2) / (1 - 1/B)       # trace_sigma
            |G|^2              = (B |g|^2 - sum_i |g_i|^2 / B) / (B - 1)        # grad_sq
            b_simple           = S / |G|^2

        The square roots take negative rounding residues as 0. Every entry is NaN when `B == 1`.
    """
    one = B > 1
    Bm1 = ops.where(one, B - 1, ops.ones_like(B))

    def root(x):
        return ops.sqrt(ops.maximum(x, ops.zeros_like(x)))

    trace = (sum_sq / B - gg) / (1 - 1 / ops.where(one, B, 2 * ops.ones_like(B)))
    grad_sq = (B * gg - sum_sq / B) / Bm1
    by_name = {
        "norm_test": root((sum_sq - B * gg) / (Bm1 * B * gg)),
        "inner_product_test": root((sum_p2 - B * gg * gg) / (Bm1 * B * gg * gg)),
        "orthogonality_test": root((sum_sq - sum_p2 / gg) / (Bm1 * B * gg)),
        "gsnr": gsnr,
        "b_simple": trace / grad_sq,
        "trace_sigma": trace,
        "grad_sq": grad_sq,
    }
    row = ops.stack([by_name[name] for name in NOISE_COLUMNS])
    return ops.cast(ops.where(one, row, ops.full_like(row, float("nan"))), "float64")


def dense_statistics(dense, records, grads, dtype):
    """The statistics of one step whose trainable layers are all Dense.

    Args:
        dense: list of `(layer, kernel_index, bias_index or None)` (`per_example.check_model`).
        records: list, per entry of `dense`, of `(input (B, n_in), delta (B, n_out))`, already
            divided by any loss scale, or None for a layer without a gradient in the step.
        grads: dict `{variable index: gradient}`, unscaled.
        dtype: the dtype to compute in (`"float32"` or `"float64"`).

    Returns:
        `(row, norms)`: float64 `(len(NOISE_COLUMNS),)` (all NaN when no layer had a gradient)
        and `dtype` `(batch,)`, each example's gradient norm over all the Dense variables.
    """
    total = None
    for (layer, jk, jb), rec in zip(dense, records, strict=True):
        if rec is None or grads.get(jk) is None:
            continue
        a, d = ops.cast(rec[0], dtype), ops.cast(rec[1], dtype)
        g_b = None if jb is None or grads.get(jb) is None else ops.cast(grads[jb], dtype)
        terms = dense_terms(a, d, ops.cast(grads[jk], dtype), g_b, layer.kernel_regularizer is not None, layer.bias_regularizer is not None)
        total = terms if total is None else tuple(x + y for x, y in zip(total, terms, strict=True))
    if total is None:
        return ops.full((len(NOISE_COLUMNS),), float("nan"), "float64"), ops.zeros((0,), dtype)
    sq, p, p_shift, ratio_sum, count, gg = total
    p = p + p_shift
    batch = ops.cast(ops.shape(sq)[0], dtype)
    return noise_row(batch, ops.sum(sq), ops.sum(p * p), gg, ratio_sum / count), ops.sqrt(sq)
