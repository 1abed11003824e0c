"""Per-example gradient statistics inside the compiled train step, for `GradientLogger(per_example=True)`.

A Dense layer computes `z = a @ W + b` for each example `a_i` (a row of its input `A`,
`(batch, n_in)`); backpropagation hands it the output delta `D = dL/dz` (`(batch, n_out)`).
The batch loss is the mean of the examples' own losses `l_i` (as Keras weighs them: sample and
class weights included), so `d_i` carries a factor `1/B`, and example i's own gradient is (the
closed form of BackPACK, Dangel et al. 2020, with no `(batch, parameters)` tensor)::

    g_i(W) = B * outer(a_i, d_i)          # (n_in, n_out)
    g_i(b) = B * d_i                      # (n_out,)
    |g_i(W)|^2 = B^2 |a_i|^2 |d_i|^2
    g_i . g = B a_i^T G_W d_i + B d_i . g_b
    sum_i g_i(W)^2 = B^2 (A*A)^T (D*D)    # elementwise squares, for the GSNR

where `G_W`, `g_b` are the batch gradient (their mean). Weight penalties (`kernel_regularizer`,
`bias_regularizer`) are not per example: their gradient `r` is added to every example's
gradient (each example's loss carries the whole penalty, so the mean is still the batch
gradient), `r = G_W - A^T D`; `activity_regularizer` flows through `D` like the loss.

Any other layer with trainable variables takes the vectorized fallback: its input `x` and the
gradient `dL/dout` of its output are recorded in the same way (a hook on `call` passes the output
through the tap), and example i's gradient is `B` times the vector-Jacobian product of the
layer's `call` on `x_i` alone with `dL/dout_i`, for all examples at once with
`tf.vectorized_map` (pfor): a `(batch, parameters)` tensor for that layer only. The recomputed
call must be the one of the step, at the step's weights (so the statistics are computed before
the optimizer's update), and layers that draw random numbers (a `SeedGenerator`) are refused by
name, as are recurrent layers (their cells run inside a loop), calls with tensor arguments
besides the input (masks) and outputs that carry logits for the loss (`_keras_logits`: a
sigmoid or softmax output layer that is not Dense).

`PerExampleTaps` records `A` where the layer is called (a hook on `call`) and `D` where it is
differentiated (its activation is replaced, during `fit` only, by `activation(tap(z))` where
`tap` is an identity whose gradient function keeps `dz`), both in the train step being traced;
the capture's `apply` hook then computes the statistics in the same graph (`step_statistics`,
`per_example_ops`) and writes them with the step's row (`write`). The
Dropout mask is the one the step used: `A` and `D` come from the step's own forward and
backward pass. Everything is restored after `fit`.

References:
    McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training" (the
    gradient noise scale B_simple); Schneider, Dangel, Hennig 2021, "Cockpit: A Practical
    Debugging Tool for the Training of Deep Neural Networks" (norm, inner-product and
    orthogonality tests, GSNR); Dangel, Kunstner, Hennig 2020, "BackPACK: Packing more into
    backprop" (per-example quantities of Dense layers from inputs and deltas).
"""

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import tensorflow as tf

from kerasbp.logger import per_example_ops
from kerasbp.logger.log import NOISE_COLUMNS


def check_model(model):
    """`per_example_ops.check_model`, then what the TensorFlow taps cannot do.

    Returns:
        `(dense, generic)` as `per_example_ops.check_model`.

    Raises:
        ValueError: for everything `per_example_ops.check_model` refuses; a model compiled with
            `jit_compile=True` (XLA).
    """
    found = per_example_ops.check_model(model)
    if getattr(model, "jit_compile", False) is True:
        raise ValueError(
            "GradientLogger(per_example=True) does not support XLA yet: its buffer of per-example norms grows with the widest "
            "batch, which a compiled XLA step cannot do. Received: a model compiled with jit_compile=True (Keras's "
            "jit_compile='auto' picks it on a GPU). Compile with jit_compile=False"
        )
    return found


def _in_this_graph(tensor):
    if tf.executing_eagerly():
        return not hasattr(tensor, "graph") or isinstance(tensor, tf.Variable)
    return getattr(tensor, "graph", None) is tf.compat.v1.get_default_graph()


class PerExampleTaps:
    """The hooks that record each layer's inputs and output deltas in the traced train step.

    Args:
        model: the model (see `check_model`, which is called here).

    Attributes:
        dense: list of `(layer, kernel_index, bias_index or None)`: closed form.
        generic: list of `(layer, [variable indices])`: the vectorized fallback.
    """

    def __init__(self, model):
        self.model = model
        self.dense, self.generic = check_model(model)
        self._pending = {}  # layer position (Dense first, then generic) -> list of records
        self._stack = []  # the records of the Dense calls running now
        self._calls = {}  # generic layer position -> its own (unhooked) call

    def hooks(self, hooks):
        """`hooks` (the capture's list of `(object, attribute, replacement)`) with, per Dense layer,
        a hook on `call` (wrapping the capture's own hook on it, if any) and one on `activation`."""
        hooks = list(hooks)
        for k, (layer, _, _) in enumerate(self.dense):
            at = next((i for i, (obj, name, _) in enumerate(hooks) if obj is layer and name == "call"), None)
            inner = layer.call if at is None else hooks[at][2]
            entry = (layer, "call", self._call_hook(inner, k, layer))
            if at is None:
                hooks.append(entry)
            else:
                hooks[at] = entry
            hooks.append((layer, "activation", self._activation_hook(layer.activation)))
        for k, (layer, _) in enumerate(self.generic, start=len(self.dense)):
            at = next((i for i, (obj, name, _) in enumerate(hooks) if obj is layer and name == "call"), None)
            inner = layer.call if at is None else hooks[at][2]
            self._calls[k] = layer.call
            entry = (layer, "call", self._generic_hook(inner, k, layer))
            if at is None:
                hooks.append(entry)
            else:
                hooks[at] = entry
        return hooks

    def _keep(self, inputs, args, kwargs):
        """Whether a call belongs to the step being traced (a training call on tensors)."""
        training = kwargs.get("training", None)
        keep = tf.is_tensor(inputs) and not isinstance(inputs, keras.KerasTensor) and training is not False
        return keep and not (tf.executing_eagerly() and not self.model.run_eagerly)

    def _generic_hook(self, call, k, layer):
        def hooked_call(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            if not self._keep(inputs, args, kwargs):
                return outputs
            extra = [a for a in (*args, *kwargs.values()) if tf.is_tensor(a)]
            if extra or not tf.is_tensor(outputs) or hasattr(outputs, "_keras_logits"):
                why = (
                    "it was called with tensor arguments besides its input (a mask or a state)"
                    if extra
                    else "its output carries the logits of a sigmoid or softmax for the loss"
                    if tf.is_tensor(outputs)
                    else "its output is not one tensor"
                )
                raise ValueError(
                    f"GradientLogger(per_example=True) cannot recompute layer {layer.name!r} ({type(layer).__name__}) per example: "
                    f"{why}. Use per_example=False"
                )
            record = {"a": inputs, "d": [], "kwargs": {key: v for key, v in kwargs.items() if key != "mask"}}

            @tf.custom_gradient
            def tap(y):
                def grad(dy):
                    record["d"].append(dy)  # (batch, ...): dL/doutput of this step
                    return dy

                return tf.identity(y), grad

            kept = self._pending.setdefault(k, [])
            kept[:] = [r for r in kept if _in_this_graph(r["a"])] + [record]
            return tap(outputs)

        return hooked_call

    def _call_hook(self, call, k, layer):
        def hooked_call(inputs, *args, **kwargs):
            record = None
            if self._keep(inputs, args, kwargs):
                per_example_ops.check_dense_input(layer, tuple(inputs.shape))
                record = {"a": inputs, "d": []}
            self._stack.append(record)
            try:
                outputs = call(inputs, *args, **kwargs)
            finally:
                self._stack.pop()
            if record is not None:
                kept = self._pending.setdefault(k, [])
                kept[:] = [r for r in kept if _in_this_graph(r["a"])] + [record]
            return outputs

        return hooked_call

    def _activation_hook(self, activation):
        def tapped(z):
            record = self._stack[-1] if self._stack else None
            if record is None:
                return activation(z)

            @tf.custom_gradient
            def tap(z):
                def grad(dz):
                    record["d"].append(dz)  # (batch, units): this step's output delta
                    return dz

                return tf.identity(z), grad

            return activation(tap(z))

        tapped.__name__ = getattr(activation, "__name__", "activation")
        return tapped

    def take(self):
        """The records of the step being traced: list per layer (Dense, then the others) of
        `(input, output delta, call kwargs)` or None (not called, or not differentiated: its
        gradient is None).

        Raises:
            ValueError: for a layer called more than once in the step (a shared layer) or
                differentiated more than once.
        """
        pending, self._pending = self._pending, {}
        out = []
        for k, layer in enumerate([entry[0] for entry in self.dense + self.generic]):
            records = [r for r in pending.get(k, []) if _in_this_graph(r["a"])]
            if len(records) > 1:
                raise ValueError(
                    f"GradientLogger(per_example=True) does not support a layer called more than once per train step "
                    f"(a shared layer). Received: layer {layer.name!r} called {len(records)} times"
                )
            if not records or not records[0]["d"]:
                out.append(None)
                continue
            if len(records[0]["d"]) > 1:
                raise ValueError(
                    f"GradientLogger(per_example=True) needs one gradient computation per train step. Received: layer {layer.name!r} "
                    f"differentiated {len(records[0]['d'])} times"
                )
            out.append((records[0]["a"], records[0]["d"][0], records[0].get("kwargs", {})))
        return out

    def statistics(self, taken, grads, scale, dtype):
        """The per-example statistics of one step from its records and batch gradient.

        Args:
            taken: the result of `take()`.
            grads: dict `{variable index: gradient tensor}` as handed to the optimizer (still
                multiplied by the loss scale).
            scale: None or the loss scale (scalar) that multiplies `grads` and the deltas.
            dtype: the dtype to compute in.

        Returns:
            `(row, norms)`: float64 `(len(NOISE_COLUMNS),)` and `dtype` `(batch,)`, the
            per-example gradient norms `|g_i|` over all variables of the Dense layers.
        """
        s = None if scale is None else tf.cast(scale, dtype)

        def unscaled(x):
            x = tf.cast(tf.convert_to_tensor(x), dtype)
            return x if s is None else x / s

        batch = None
        sq = p = None  # (batch,): |g_i|^2, and the parts of g_i . g that vary with i
        p_shift = gg = tf.zeros((), dtype)  # the part of g_i . g common to all i; |g|^2
        ratio_sum = count = tf.zeros((), dtype)  # GSNR summed over parameters with variance > 0
        for (layer, jk, jb), rec in zip(self.dense, taken[: len(self.dense)], strict=True):
            if grads.get(jk) is None:
                continue
            _check_seen(layer, rec)
            a, d = tf.cast(rec[0], dtype), unscaled(rec[1])  # (B, n_in), (B, n_out)
            g_b = unscaled(grads[jb]) if jb is not None and grads.get(jb) is not None else None
            terms = per_example_ops.dense_terms(a, d, unscaled(grads[jk]), g_b, layer.kernel_regularizer is not None, layer.bias_regularizer is not None)
            if batch is None:
                batch = tf.cast(tf.shape(a)[0], dtype)
                sq = p = tf.zeros(tf.shape(a)[:1], dtype)
            sq, p, p_shift, ratio_sum, count, gg = tuple(x + y for x, y in zip((sq, p, p_shift, ratio_sum, count, gg), terms, strict=True))
        for k, ((layer, js), rec) in enumerate(zip(self.generic, taken[len(self.dense) :], strict=True), start=len(self.dense)):
            if all(grads.get(j) is None for j in js):
                continue
            _check_seen(layer, rec)
            g_rows = self._vectorized(k, layer, rec, s, dtype)  # (B, P_layer)
            if batch is None:
                batch = tf.cast(tf.shape(g_rows)[0], dtype)
                sq = tf.zeros(tf.shape(g_rows)[:1], dtype)
                p = tf.zeros(tf.shape(g_rows)[:1], dtype)
            g = tf.concat([tf.reshape(unscaled(grads[j]), [-1]) for j in js], axis=0)  # (P_layer,)
            if any(value is not None for name, value in vars(layer).items() if name.endswith("_regularizer") and name != "activity_regularizer"):
                g_rows = g_rows + (g - tf.reduce_mean(g_rows, axis=0))  # the penalty's gradient, to every example
            sq += tf.reduce_sum(g_rows * g_rows, axis=1)
            p += tf.linalg.matvec(g_rows, g)
            r, c, s2 = per_example_ops.gsnr_terms(g, tf.reduce_mean(g_rows * g_rows, axis=0))
            ratio_sum, count, gg = ratio_sum + r, count + c, gg + s2
        if batch is None:
            return tf.fill([len(NOISE_COLUMNS)], tf.constant(float("nan"), tf.float64)), tf.zeros([0], dtype)
        p = p + p_shift
        row = per_example_ops.noise_row(batch, tf.reduce_sum(sq), tf.reduce_sum(p * p), gg, ratio_sum / count)
        return row, tf.sqrt(sq)


    def _vectorized(self, k, layer, rec, s, dtype):
        """`(B, P)`: each example's gradient of the layer's variables (flattened, in
        `layer.trainable_weights` order), `B` times the vector-Jacobian product of its own call
        with its output delta, by `tf.vectorized_map`."""
        x, dy, kwargs = rec
        call, variables = self._calls[k], list(layer.trainable_weights)
        B = tf.cast(tf.shape(x)[0], dtype)

        def one(pair):
            xi, di = pair
            with tf.GradientTape() as tape:
                out = call(xi[None], **kwargs)
            grads = tape.gradient(out, variables, output_gradients=tf.cast(di[None], out.dtype))
            return tf.concat([tf.reshape(tf.cast(tf.convert_to_tensor(g), dtype), [-1]) for g in grads], axis=0)

        rows = tf.vectorized_map(one, (x, dy))  # (B, P)
        return B * (rows if s is None else rows / s)


def _check_seen(layer, record):
    if record is None:
        raise ValueError(
            f"GradientLogger(per_example=True) did not see layer {layer.name!r} ({type(layer).__name__}) called and differentiated "
            "in the train step, yet it has a gradient: it runs inside a loop (an RNN cell) or outside the model's call. "
            "Use per_example=False"
        )


def step_statistics(taps, taken, grads, scale, dtype, log_now):
    """`taps.statistics(...)` (see `PerExampleTaps.statistics`) at the logged steps only: under
    `tf.cond(log_now, ...)` unless every step is logged (`log_now` None). Call it before the
    optimizer's update, so that the fallback's recomputed layers see the step's weights.

    Returns:
        `(row, norms)`; at steps not logged a NaN row and no norms.
    """

    def compute():
        return taps.statistics(taken, grads, scale, dtype)

    if log_now is None:
        return compute()
    return tf.cond(log_now, compute, lambda: (tf.fill([len(NOISE_COLUMNS)], tf.constant(float("nan"), tf.float64)), tf.zeros([0], dtype)))


def write(buffers, slot, row, norms):
    """Write one step's noise row and per-example norms into `buffers` at `slot` (the norms'
    buffer grows, NaN-padded, when a batch is wider than any before)."""
    buffers.noise.scatter_nd_update([[slot]], row[None])
    v = buffers.norms
    B, W = tf.shape(norms)[0], tf.shape(v)[1]

    def grow():
        v.assign(tf.pad(tf.convert_to_tensor(v), [[0, 0], [0, B - W]], constant_values=float("nan")))
        return tf.constant(True)

    tf.cond(B > W, grow, lambda: tf.constant(False))
    width = tf.shape(v)[1]
    v.scatter_nd_update([[slot]], tf.pad(tf.cast(norms, v.dtype), [[0, width - B]], constant_values=float("nan"))[None])
