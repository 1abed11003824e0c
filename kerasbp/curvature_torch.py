"""The torch side of `HessianProbe` (`kerasbp/curvature.py`): the measurement in the eager train step.

Keras's torch trainer runs each train step eagerly and looks `self.train_step` up at every step
(`keras/src/backend/torch/trainer.py`), so the wrapper runs as it is, with no train function to
replace. Hessian-vector products are reverse-over-reverse: one forward pass, the gradient built
with `create_graph=True`, then for each `v` one backward pass of that graph, which gives
`sum_i v_i . dg_i/dtheta = v^T H = (H v)^T` (Pearlmutter 1994; `H` is symmetric):

```python
grads = torch.autograd.grad(loss, params, create_graph=True)
Hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
```

So every product sees the one forward pass, with its dropout mask; the variables that pass moved
and torch's global random generator (which a Dropout without a seed draws from) are put back
before the step runs, and what a `GradientLogger(per_example=True)` recorded of it
is dropped. The random draws are NumPy's, seeded with `(seed, step, k)`.
The numbers stay on the device in a ring buffer until the callback reads them; only the sign of
the dominant eigenvalue is read on the host, at probed steps, to choose the shifted iteration.
"""

import keras
import numpy as np
import torch

from kerasbp.curvature import COLUMNS, ProbeState, fixed_arrays, state_variables
from kerasbp.logger.hooks import attached_capture, leaf_optimizer


def _dot(a, b):
    """`sum_j a_j . b_j` over lists of tensors, a float64 scalar tensor."""
    return sum(torch.sum(x.double() * y.double()) for x, y in zip(a, b, strict=True))


class TorchProbeState(ProbeState):
    """The device side of a `HessianProbe` on torch for one model: the step counter (a Python
    int: the step is eager), the ring buffer `(capacity, len(COLUMNS))` float64 on the weights'
    device, the fixed data as tensors, and the wrapped `train_step`.

    Args:
        probe: the `HessianProbe` (its settings are read at each probed step).
        model: a compiled `keras.Model`.
        capacity: int, rows of the ring buffer.
    """

    replaces_train_function = False  # the torch trainer looks `train_step` up at each step

    def __init__(self, probe, model, capacity):
        super().__init__(model, capacity)
        device = model.trainable_weights[0].value.device
        self.counter = 0
        self.count = 0
        self.rows = torch.zeros((capacity, len(COLUMNS)), dtype=torch.float64, device=device)
        arrays = fixed_arrays(probe.data, model)
        self.fixed = None if arrays is None else tuple(keras.ops.convert_to_tensor(a) for a in arrays)

        def train_step(data):
            step = self.counter  # this train step's number
            self.counter += 1
            if step % probe.every_n_steps == 0:
                lam, trace = estimates(probe, model, data if self.fixed is None else self.fixed, step)
                learning_rate = _learning_rate(model.optimizer).to(device)
                self.rows[self.count % capacity] = torch.stack([torch.tensor(float(step), dtype=torch.float64, device=device), lam, trace, learning_rate])
                self.count += 1
            return self.original(data)

        self.train_step = train_step

    def step(self):
        return self.counter

    def set_step(self, step):
        self.counter = int(step)

    def written(self):
        return self.count

    def rows_at(self, slots):
        return self.rows.cpu().numpy()[slots]


def _learning_rate(optimizer):
    """float64 scalar tensor: the learning rate of this step's update (a schedule evaluated at the
    iterations before it)."""
    return torch.as_tensor(keras.ops.convert_to_tensor(leaf_optimizer(optimizer).learning_rate)).detach().to(torch.float64)


def estimates(probe, model, batch, step):
    """`(lambda_max, trace)`: float64 scalar tensors for the loss on `batch` at the current
    weights, with `probe`'s settings (`n_iterations`, `n_probes`, `seed`).

    Args:
        probe: the `HessianProbe`.
        model: the `keras.Model`.
        batch: the step's data, `(x, y)` or `(x, y, sample_weight)`, tensors.
        step: int, the train step (the random draws depend on `(seed, step)`).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    params = [w.value for w in model.trainable_variables]
    sizes = [p.numel() for p in params]
    state_vars = state_variables(model)
    saved = [torch.clone(v.value).detach() for v in state_vars]
    # A Dropout without a seed draws from torch's global generator (Keras's unseeded fast path):
    # put it back too, so that the step draws the mask this pass drew.
    rng_state = torch.random.get_rng_state()
    cuda_rng_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    compute_loss = type(model).compute_loss  # the model's own, not a logger's hook
    with torch.enable_grad():
        y_pred = model(x, training=True) if getattr(model, "_call_has_training_arg", True) else model(x)
        if getattr(model, "_compute_loss_has_training_arg", True):
            loss = compute_loss(model, x, y, y_pred, sample_weight, training=True)
        else:
            loss = compute_loss(model, x, y, y_pred, sample_weight)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    for var, value in zip(state_vars, saved, strict=True):  # undo what the forward pass moved
        var.assign(value)
    torch.random.set_rng_state(rng_state)
    if cuda_rng_states is not None:
        torch.cuda.set_rng_state_all(cuda_rng_states)
    taps = getattr(attached_capture(model), "taps", None)
    if taps is not None:  # a GradientLogger(per_example=True)'s records of this pass are not the step's
        taps.forget()
    # A gradient that does not depend on the weights (e.g. a bias under a linear loss term) has
    # no graph: its rows of H are zero.
    linked = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def hvp(v):
        out = [torch.zeros_like(p) for p in params]
        if linked:
            with torch.enable_grad():
                parts = torch.autograd.grad([grads[i] for i in linked], params, grad_outputs=[v[i] for i in linked], retain_graph=True, allow_unused=True)
            for j, h in enumerate(parts):
                if h is not None:
                    out[j] = h.detach()
        return out

    def split(flat):
        return [part.reshape(p.shape) for part, p in zip(torch.split(flat, sizes), params, strict=True)]

    def draw(k, rademacher):
        rng = np.random.default_rng([probe.seed, step, k])
        values = 2.0 * rng.integers(0, 2, sum(sizes)) - 1.0 if rademacher else rng.standard_normal(sum(sizes))
        return split(torch.as_tensor(values, dtype=params[0].dtype, device=params[0].device))

    def power(shift):
        v = draw(0, rademacher=False)
        norm = torch.sqrt(_dot(v, v)).to(params[0].dtype)
        v = [p / norm for p in v]
        lam = torch.zeros((), dtype=torch.float64, device=params[0].device)
        for _ in range(probe.n_iterations):
            hv = hvp(v)
            if shift is not None:
                hv = [h - shift.to(h.dtype) * p for h, p in zip(hv, v, strict=True)]
            lam = _dot(v, hv)  # the Rayleigh quotient of the unit vector v
            norm = torch.sqrt(_dot(hv, hv)).to(params[0].dtype)
            v = [torch.where(norm > 0, h / norm, torch.zeros_like(h)) for h in hv]
        return lam

    dominant = power(None)
    lambda_max = power(dominant) + dominant if bool(dominant < 0) else dominant

    if probe.n_probes == 0:
        trace = torch.tensor(float("nan"), dtype=torch.float64, device=params[0].device)
    elif probe.n_probes == "exact":
        basis = torch.eye(sum(sizes), dtype=params[0].dtype, device=params[0].device)
        trace = sum(_dot(split(e), hvp(split(e))) for e in basis)  # sum_j e_j . H e_j
    else:
        trace = sum(_dot(z, hvp(z)) for z in (draw(k + 1, rademacher=True) for k in range(probe.n_probes))) / probe.n_probes
    return lambda_max, trace
