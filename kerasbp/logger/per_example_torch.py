"""Per-example gradient statistics on the torch backend, for `GradientLogger(per_example=True)`.

The torch trainer runs each train step eagerly (Keras 3.15, `keras/src/backend/torch/trainer.py`:
forward pass, `loss.backward()`, `optimizer.apply`). So each Dense layer's input `A` is recorded
by a hook on its `call`, and the delta `D = dL/dz` of its pre-activation by a hook on its
`activation` that registers `z.register_hook` (torch calls it with `dz` during `backward()`).
The capture's `apply` hook then computes the statistics before the optimizer's update, from `A`,
`D` and the batch gradient, with the closed forms of `per_example_ops` (`dense_statistics`): on
the device, no host read. Only Dense layers are supported: a layer with trainable variables of
another kind is refused by name (TensorFlow's vectorized fallback has no torch twin here), as is
everything `per_example.check_model` refuses.
"""

import torch

from kerasbp.logger import per_example_ops
from kerasbp.logger.log import NOISE_COLUMNS
from kerasbp.logger.per_example_ops import check_model


def check_torch_model(model):
    """`per_example_ops.check_model`, then what the torch taps cannot do.

    Returns:
        the list of `(layer, kernel_index, bias_index or None)` of the Dense layers.

    Raises:
        ValueError: for everything `check_model` refuses; a trainable layer other than Dense;
            a model compiled with `jit_compile=True` (`torch.compile` would trace the hooks).
    """
    if getattr(model, "jit_compile", False) is True:
        raise ValueError(
            "GradientLogger(per_example=True) on torch needs eager train steps. Received: a model compiled with "
            "jit_compile=True (torch.compile). Compile with jit_compile=False"
        )
    dense, generic = check_model(model)
    if generic:
        layer = generic[0][0]
        raise ValueError(
            f"GradientLogger(per_example=True) on the torch backend supports Dense layers only. Received: layer {layer.name!r} "
            f"({type(layer).__name__}) with trainable variables. Use the TensorFlow backend (vectorized fallback) or per_example=False"
        )
    return dense


class TorchTaps:
    """The hooks that record each Dense layer's input and pre-activation delta in a logged step.

    Args:
        model: the model (see `check_torch_model`, called here).
        logged: a function of no arguments: whether the train step now running is logged (the
            hooks record nothing otherwise).

    Attributes:
        dense: list of `(layer, kernel_index, bias_index or None)`.
    """

    def __init__(self, model, logged):
        self.dense = check_torch_model(model)
        self.logged = logged
        self._records = {}  # Dense position -> list of {"a": input, "d": delta or None}
        self._stack = []  # the records of the Dense calls running now

    def hooks(self):
        """`(object, attribute, replacement)` per Dense layer: its `call` and its `activation`."""
        hooks = []
        for k, (layer, _, _) in enumerate(self.dense):
            hooks.append((layer, "call", self._call_hook(layer.call, k, layer)))
            hooks.append((layer, "activation", self._activation_hook(layer.activation)))
        return hooks

    def _call_hook(self, call, k, layer):
        def hooked_call(inputs, *args, **kwargs):
            record = None
            if torch.is_grad_enabled() and torch.is_tensor(inputs) and self.logged():
                per_example_ops.check_dense_input(layer, tuple(inputs.shape))
                record = {"a": inputs.detach(), "d": None}
                self._records.setdefault(k, []).append(record)
            self._stack.append(record)
            try:
                return call(inputs, *args, **kwargs)
            finally:
                self._stack.pop()

        return hooked_call

    def _activation_hook(self, activation):
        def tapped(z):
            record = self._stack[-1] if self._stack else None
            if record is not None and z.requires_grad:

                def keep(dz):
                    record["d"] = dz.detach()  # (batch, units): this step's pre-activation delta

                z.register_hook(keep)
            return activation(z)

        tapped.__name__ = getattr(activation, "__name__", "activation")
        return tapped

    def forget(self):
        """Drop what was recorded (a step not logged, or one whose update did not run)."""
        self._records = {}

    def statistics(self, grads, scale, dtype):
        """The statistics of the step just differentiated, then forget its records.

        Args:
            grads: dict `{variable index: gradient tensor}` as handed to the optimizer (still
                multiplied by the loss scale).
            scale: None or the loss scale (scalar or tensor) that multiplies `grads` and the deltas.
            dtype: `"float32"` or `"float64"`, the dtype to compute in.

        Returns:
            `(row, norms)`: float64 `(len(NOISE_COLUMNS),)` and `(batch,)` per-example norms.

        Raises:
            ValueError: for a layer called more than once in the step (a shared layer), or a
                layer with a gradient that was not seen called and differentiated.
        """
        records, self._records = self._records, {}
        s = None if scale is None else torch.as_tensor(scale, dtype=getattr(torch, dtype))
        taken = []
        for k, (layer, jk, _) in enumerate(self.dense):
            kept = records.get(k, [])
            if len(kept) > 1:
                raise ValueError(
                    f"GradientLogger(per_example=True) does not support a layer called more than once per train step "
                    f"(a shared layer). Received: layer {layer.name!r} called {len(kept)} times"
                )
            if grads.get(jk) is None:
                taken.append(None)
                continue
            if not kept or kept[0]["d"] is None:
                raise ValueError(
                    f"GradientLogger(per_example=True) did not see layer {layer.name!r} ({type(layer).__name__}) called and "
                    "differentiated in the train step, yet it has a gradient. Use per_example=False"
                )
            a, d = kept[0]["a"], kept[0]["d"]
            taken.append((a, d if s is None else d.to(s.dtype) / s.to(d.device)))
        unscaled = {j: g if s is None else g.to(s.dtype) / s.to(g.device) for j, g in grads.items() if g is not None}
        return per_example_ops.dense_statistics(self.dense, taken, unscaled, dtype)


def write(buffers, slot, row, norms):
    """Write one step's noise row and per-example norms into `buffers.noise` `(capacity,
    len(NOISE_COLUMNS))` and `buffers.norms` `(capacity, width)` at `slot`; the norms' buffer
    grows, NaN-padded, when a batch is wider than any before."""
    buffers.noise[slot] = row.to(buffers.noise.dtype)
    width, B = buffers.norms.shape[1], norms.shape[0]
    if B > width:
        pad = torch.full((buffers.norms.shape[0], B - width), float("nan"), dtype=buffers.norms.dtype, device=buffers.norms.device)
        buffers.norms = torch.cat([buffers.norms, pad], dim=1)
    buffers.norms[slot] = float("nan")
    buffers.norms[slot, :B] = norms.to(buffers.norms.dtype)


def buffers(capacity, dtype, device):
    """`(noise, norms)`: float64 `(capacity, len(NOISE_COLUMNS))` and `dtype` `(capacity, 0)`, NaN."""
    noise = torch.full((capacity, len(NOISE_COLUMNS)), float("nan"), dtype=torch.float64, device=device)
    return noise, torch.zeros((capacity, 0), dtype=dtype, device=device)
