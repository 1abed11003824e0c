"""The optimizers' states and the checks that their `apply` makes (pure NumPy).

Every state also has the fields of the options common to all Keras optimizers, empty unless in
use: `accumulated_gradients` (`gradient_accumulation_steps`) and `averages` (`use_ema`).

A state is a `NamedTuple`, as in optax (`optax/_src/transform.py`, `ScaleByAdamState`): the
iteration count (Keras's `optimizer.iterations`) and one tuple of slot arrays per accumulator,
each array shaped like its parameter, in `model.trainable_weights` order. A slot the
configuration does not use (SGD's velocities without momentum, Adam's `velocity_hats` without
amsgrad, ...) is an empty tuple, as Keras creates no variables for it.

Example:
    >>> import numpy as np
    >>> AdamState(0, zeros_like_each([np.ones(2)]), zeros_like_each([np.ones(2)]), ())
    AdamState(iterations=0, momentums=(array([0., 0.]),), velocities=(array([0., 0.]),), velocity_hats=(), accumulated_gradients=(), averages=())
"""

from typing import NamedTuple

import numpy as np


class SGDState(NamedTuple):
    """State of `SGD`.

    Attributes:
        iterations: int, the number of steps applied so far (Keras's `optimizer.iterations`).
        momentums: tuple of arrays shaped like the parameters (the velocities `v`); empty when
            `momentum == 0`, as in Keras.
    """

    iterations: int
    momentums: tuple
    accumulated_gradients: tuple = ()
    averages: tuple = ()


class AdamState(NamedTuple):
    """State of `Adam`.

    Attributes:
        iterations: int, steps applied so far; the next step uses `t = iterations + 1`.
        momentums: tuple of arrays, the first moments `m`.
        velocities: tuple of arrays, the second moments `v`.
        velocity_hats: tuple of arrays, the running maximum of `v` (empty unless `amsgrad`).
    """

    iterations: int
    momentums: tuple
    velocities: tuple
    velocity_hats: tuple
    accumulated_gradients: tuple = ()
    averages: tuple = ()


class RMSpropState(NamedTuple):
    """State of `RMSprop`.

    Attributes:
        iterations: int, steps applied so far.
        velocities: tuple of arrays, the running mean of `g * g`.
        momentums: tuple of arrays, the accumulated increments (empty unless `momentum > 0`).
        average_gradients: tuple of arrays, the running mean of `g` (empty unless `centered`).
    """

    iterations: int
    velocities: tuple
    momentums: tuple
    average_gradients: tuple
    accumulated_gradients: tuple = ()
    averages: tuple = ()


def _state(name, doc, *slots, scalars=()):
    fields = [("iterations", int)] + [(f, tuple) for f in slots] + [(f, object) for f in scalars]
    cls = NamedTuple(name, fields + [("accumulated_gradients", tuple), ("averages", tuple)])
    cls.__new__.__defaults__ = ((), ())
    cls.__doc__ = doc
    return cls


AdagradState = _state("AdagradState", "State of `Adagrad`: the running sums of `g * g`.", "accumulators")
AdadeltaState = _state(
    "AdadeltaState", "State of `Adadelta`: running means of `g * g` and of the squared updates.", "accumulated_grads", "accumulated_delta_vars"
)
AdamaxState = _state("AdamaxState", "State of `Adamax`: first moments `m` and infinity norms `u`.", "momentums", "norms")
NadamState = _state(
    "NadamState", "State of `Nadam`: moments, and `u_product`, the running product of the momentum schedule (a scalar).",
    "momentums", "velocities", scalars=("u_product",),
)
FtrlState = _state("FtrlState", "State of `Ftrl`: accumulators `n` and linear terms `z`.", "accumulators", "linears")
LionState = _state("LionState", "State of `Lion`: momentums.", "momentums")
LambState = _state("LambState", "State of `Lamb`: first and second moments.", "momentums", "velocities")
AdafactorState = _state(
    "AdafactorState",
    "State of `Adafactor`: row and column factors `r`, `c` (0-d placeholders for parameters of rank < 2) and `v`.",
    "r", "c", "v",
)


def check_params_grads(params, grads):
    """Check the arguments of `apply` and cast each gradient to its parameter's dtype.

    Args:
        params: list of float arrays (any shapes).
        grads: list of arrays shaped like `params`.

    Returns:
        `(params, grads)`: two lists of arrays; `grads[i]` has `params[i]`'s dtype, as Keras's
        `gradient = ops.cast(gradient, variable.dtype)`.

    Raises:
        TypeError: for a parameter that is not a float array.
        ValueError: for lists of different lengths or a gradient of another shape (naming the
            index and both shapes).
    """
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(
            f"`params` and `grads` must have the same length. Received {len(params)} params and {len(grads)} grads"
        )
    out_p, out_g = [], []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        p = np.asarray(p)
        if p.dtype.kind != "f":
            raise TypeError(f"`params[{i}]` must be a float array. Received dtype {p.dtype}")
        g = np.asarray(g)
        if g.shape != p.shape:
            raise ValueError(
                f"`grads[{i}]` must have the shape of `params[{i}]`. Received: grads[{i}] of shape {g.shape}, "
                f"params[{i}] of shape {p.shape}"
            )
        out_p.append(p)
        out_g.append(g.astype(p.dtype, copy=False))  # Keras: gradient = ops.cast(gradient, variable.dtype)
    return out_p, out_g


def check_slots(name, slots, params):
    """Check one slot of a state: one array per parameter, of its shape.

    Args:
        name: str, the state field (`"momentums"`, ...), used in messages.
        slots: sequence of arrays.
        params: list of arrays, as returned by `check_params_grads`.

    Returns:
        tuple of the slot arrays.

    Raises:
        ValueError: for a wrong number of arrays or a wrong shape (naming the index).
    """
    slots = tuple(slots)
    if len(slots) != len(params):
        raise ValueError(
            f"`state.{name}` must hold one array per parameter ({len(params)}). Received {len(slots)}"
        )
    for i, (s, p) in enumerate(zip(slots, params, strict=True)):
        if np.shape(s) != p.shape:
            raise ValueError(
                f"`state.{name}[{i}]` must have the shape of `params[{i}]`. Received: {np.shape(s)} and {p.shape}"
            )
    return slots


def zeros_like_each(params):
    """A fresh slot: a tuple of zero arrays shaped and typed like each of `params`."""
    return tuple(np.zeros_like(np.asarray(p)) for p in params)


def check_iterations(state):
    """Return `state.iterations` as an `int`.

    Raises:
        ValueError: if it is not an integer >= 0.
    """
    it = state.iterations
    if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
        raise ValueError(f"`state.iterations` must be an integer >= 0. Received: iterations={it!r}")
    return int(it)
