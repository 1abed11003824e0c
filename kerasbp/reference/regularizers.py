"""Weight penalties L1, L2 and L1L2, with their gradients, as Keras adds them to the loss (pure NumPy).

A Dense layer's `kernel_regularizer` and `bias_regularizer` each add a term to the training loss
(Keras's `model.losses`, summed into the loss `fit` reports and differentiates):

```python
L1(l1):      l1 * sum(|w|)                      gradient  l1 * sign(w)   (0 at w == 0: a kink)
L2(l2):      l2 * sum(w**2)                     gradient  2 * l2 * w
L1L2(l1, l2): both
```

Keras's `L2(0.01)` is `0.01 * sum(w**2)`: no factor 1/2, so the gradient is `0.02 * w`. In float64
mode the factor is float32-rounded (Keras multiplies a Python float into a tensor through
`ops.multiply`, which converts it as a float32 constant first).

Mirrors `keras/src/regularizers/regularizers.py`.

Example:
    >>> import numpy as np
    >>> reg = L2(0.5)
    >>> w = np.array([1.0, -2.0])
    >>> float(reg(w)), reg.gradient(w).tolist()
    (2.5, [1.0, -2.0])
"""

import numpy as np

from kerasbp.checks import check_range
from kerasbp.reference.configured import Configured
from kerasbp.reference.rounding import via_float32


class Regularizer(Configured):
    """Base of `L1`, `L2`, `L1L2`: `reg(w)` is the penalty, `reg.gradient(w)` its gradient."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = check_range("l1", l1, 0.0, np.inf)
        self.l2 = check_range("l2", l2, 0.0, np.inf)

    def __call__(self, w):
        """The penalty, a 0-d float array in `w`'s dtype."""
        w = np.asarray(w)
        total = np.zeros((), w.dtype)
        if self.l1:
            total = total + via_float32(self.l1, w.dtype) * np.sum(np.abs(w))
        if self.l2:
            total = total + via_float32(self.l2, w.dtype) * np.sum(np.square(w))
        return total

    def gradient(self, w):
        """`d penalty / dw`, shaped like `w`."""
        w = np.asarray(w)
        grad = np.zeros_like(w)
        if self.l1:
            grad = grad + via_float32(self.l1, w.dtype) * np.sign(w)
        if self.l2:
            grad = grad + via_float32(self.l2, w.dtype) * (2 * w)
        return grad

    def kinks(self, w, width):
        """A bool array shaped like `w`: entries within `width` of 0 when there is an L1 term."""
        w = np.asarray(w)
        return np.abs(w) <= width if self.l1 else np.zeros(w.shape, dtype=bool)

    def get_config(self):
        """The constructor's keyword arguments, as Keras's `get_config`."""
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """`l1 * sum(|w|)`. Args: l1: float >= 0. Defaults to `0.01` (Keras's default)."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """`l2 * sum(w**2)`. Args: l2: float >= 0. Defaults to `0.01` (Keras's default)."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """`l1 * sum(|w|) + l2 * sum(w**2)`. Args: l1, l2: floats >= 0. Defaults to `0.0` each (Keras's)."""


#: The regularizers by Keras class name.
REGULARIZERS = {"L1": L1, "L2": L2, "L1L2": L1L2}
