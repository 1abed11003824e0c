"""Per-example gradient statistics on the JAX backend, for `GradientLogger(per_example=True)`.

Keras's JAX train step differentiates `compute_loss_and_updates` with `jax.value_and_grad` with
respect to the trainable variables only (Keras 3.15, `keras/src/backend/jax/trainer.py`), so the
delta `D = dL/dz` of a Dense layer's pre-activation never leaves that transformation. At a logged
step the capture therefore differentiates the same loss once more, inside the jitted step and at
the same state (the weights before the update, the same non-trainable state and so the same
dropout mask), with respect to a zero `e` added to each Dense layer's pre-activation
(`activation(z + e)`): `dL/de = D`, and the layers' inputs `A` come out of the transformation as
its auxiliary outputs. The closed forms of `per_example_ops` (`dense_statistics`) then give the
statistics from `A`, `D` and the step's own batch gradient. It costs one more forward and
backward pass at each logged step. Only Dense layers are supported: a layer with trainable
variables of another kind is refused by name, as is everything `per_example_ops.check_model`
refuses.

A jitted step's buffers have fixed shapes, so the per-example norms of a step are held in a row
of `MAX_BATCH` entries (NaN past the batch). A batch of more examples is refused by name, after
its step (an exception while Keras traces a JAX step leaves the model's variables unusable), and
its norms are NaN.
"""

import jax
import jax.numpy as jnp
import keras

from kerasbp.logger import per_example_ops
from kerasbp.logger.per_example_ops import check_model

#: The largest batch whose per-example norms a logged step holds on JAX.
MAX_BATCH = 4096


def check_jax_model(model):
    """`per_example_ops.check_model`, then what the JAX taps cannot do.

    Returns:
        the list of `(layer, kernel_index, bias_index or None)` of the Dense layers.

    Raises:
        ValueError: for everything `check_model` refuses; a trainable layer other than Dense.
    """
    dense, generic = check_model(model)
    if generic:
        layer = generic[0][0]
        raise ValueError(
            f"GradientLogger(per_example=True) on the JAX backend supports Dense layers only. Received: layer {layer.name!r} "
            f"({type(layer).__name__}) with trainable variables. Use the TensorFlow backend (vectorized fallback) or per_example=False"
        )
    return dense


class JaxTaps:
    """The hooks on each Dense layer's `call` and `activation` that, while `inputs_and_deltas`
    differentiates, record the layer's input and add the zero whose gradient is its delta.
    Outside that, they pass the calls through unchanged.

    Args:
        model: the model (see `check_jax_model`, called here).

    Attributes:
        dense: list of `(layer, kernel_index, bias_index or None)`.
    """

    def __init__(self, model):
        self.dense = check_jax_model(model)
        self._zeros = None  # while differentiating: the zero added to each Dense pre-activation
        self._inputs = None  # while differentiating: Dense position -> its input
        self._running = []  # the positions of the Dense calls running now

    def hooks(self):
        """`(object, attribute, replacement)` per Dense layer: its `call` and its `activation`."""
        hooks = []
        for k, (layer, _, _) in enumerate(self.dense):
            hooks.append((layer, "call", self._call_hook(layer.call, k, layer)))
            hooks.append((layer, "activation", self._activation_hook(layer.activation, k)))
        return hooks

    def _call_hook(self, call, k, layer):
        def hooked_call(inputs, *args, **kwargs):
            if self._inputs is None:
                return call(inputs, *args, **kwargs)
            if k in self._inputs:
                raise ValueError(
                    f"GradientLogger(per_example=True) does not support a layer called more than once per train step "
                    f"(a shared layer). Received: layer {layer.name!r} called twice"
                )
            per_example_ops.check_dense_input(layer, tuple(inputs.shape))
            self._inputs[k] = inputs
            self._running.append(k)
            try:
                return call(inputs, *args, **kwargs)
            finally:
                self._running.pop()

        return hooked_call

    def _activation_hook(self, activation, k):
        def tapped(z):
            if self._zeros is not None and self._running and self._running[-1] == k:
                z = z + self._zeros[k]  # zero: the value is unchanged, its gradient is the delta
            return activation(z)

        tapped.__name__ = getattr(activation, "__name__", "activation")
        return tapped

    def inputs_and_deltas(self, model, state, data):
        """Each Dense layer's input `A` `(B, n_in)` and the delta `D` `(B, n_out)` of the loss
        the step differentiates (loss-scaled, as its gradients are) at `state`, traced into the step.

        Args:
            model: the model.
            state: the train step's state `(trainable, non_trainable, optimizer, metrics values)`
                before its update.
            data: the step's batch, `(x, y)` or `(x, y, sample_weight)`.

        Returns:
            list over `dense` of `(A, D)`.

        Raises:
            ValueError: for a Dense layer not called in the step's forward pass, or one called twice.
        """
        trainable, non_trainable, optimizer_values, metrics = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = int(jax.tree_util.tree_leaves(x)[0].shape[0])
        zeros = [jnp.zeros((batch, layer.units), layer.compute_dtype) for layer, _, _ in self.dense]

        def loss(added):
            self._zeros, self._inputs, self._running = added, {}, []
            try:
                value, _ = model.compute_loss_and_updates(trainable, non_trainable, metrics, x, y, sample_weight, training=True, optimizer_variables=optimizer_values)
                inputs = self._inputs
            finally:
                self._zeros = self._inputs = None
            unseen = [layer.name for k, (layer, _, _) in enumerate(self.dense) if k not in inputs]
            if unseen:
                raise ValueError(
                    f"GradientLogger(per_example=True) did not see Dense layer {unseen[0]!r} called in the train step's forward "
                    "pass, yet it has trainable variables. Use per_example=False"
                )
            return value, [inputs[k] for k in range(len(self.dense))]

        (_, inputs), deltas = jax.value_and_grad(loss, has_aux=True)(zeros)
        return list(zip(inputs, deltas, strict=True))
