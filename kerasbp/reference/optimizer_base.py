"""What every Keras optimizer does around its update rule, as a pure NumPy base class.

`keras.optimizers.Optimizer.apply` (`keras/src/optimizers/base_optimizer.py`, TensorFlow
backend `keras/src/backend/tensorflow/optimizer.py`) runs, for each call:

```python
# gradient_accumulation_steps = k: only every k-th call updates, with the mean gradient
if k and (raw_iterations + 1) % k != 0:  acc += g; skip the update
if k:                                    g = (g + acc) / k; acc = 0
g = clip(g)            # clipnorm per tensor (tf.clip_by_norm) | global_clipnorm | clipvalue
w = w - w * weight_decay * lr            # decoupled weight decay, before the update
w = update_step(g, w, lr)                # the optimizer's own rule (subclasses' `_update`)
avg = m * avg + (1 - m) * w              # use_ema: m = ema_momentum, 0 on the first step
w = avg                                  # every ema_overwrite_frequency steps
raw_iterations += 1
```

The learning rate is a float (Keras keeps it in a variable) or a schedule of
`kerasbp.reference.schedules`, evaluated at the raw iteration count; the update rules see
`iterations // k` under gradient accumulation (Keras's `optimizer.iterations`). Weight decay's
factor is float32-rounded on its way in (`tf.cast` of a Python float).
"""

import numpy as np

from kerasbp.checks import check_bool, check_positive_float, check_positive_int, check_range
from kerasbp.reference.configured import Configured
from kerasbp.reference.optimizer_state import check_iterations, check_params_grads, check_slots, zeros_like_each
from kerasbp.reference.rounding import as_dtype, via_float32
from kerasbp.reference.schedules import Schedule

#: The options every Keras optimizer takes, with their defaults.
COMMON_OPTIONS = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "gradient_accumulation_steps": None,
}


class BaseOptimizer(Configured):
    """Base of the twin optimizers: `init(params)` and `apply(params, grads, state)`, pure.

    Subclasses set `name`, `state_class`, `hyperparameters` and implement `_init_slots(params)` (a dict of slot
    tuples) and `_update(params, grads, state, lr)`, where `lr(dtype)` is this step's learning
    rate in that dtype and `state.iterations` is Keras's `optimizer.iterations`.

    Args (common to all, as in Keras):
        weight_decay: None or float >= 0.
        clipnorm, clipvalue, global_clipnorm: None or positive float; at most one.
        use_ema: bool. ema_momentum: float in [0, 1]. ema_overwrite_frequency: None or int >= 1.
        gradient_accumulation_steps: None or int >= 2.
    """

    name = None
    state_class = None
    #: The names of the optimizer's own constructor arguments (besides `learning_rate`).
    hyperparameters = ()

    def _set_common(self, learning_rate, options):
        if isinstance(learning_rate, Schedule):
            self.learning_rate = learning_rate
        else:
            self.learning_rate = check_positive_float("learning_rate", learning_rate)
        unknown = set(options) - set(COMMON_OPTIONS)
        if unknown:
            raise TypeError(f"unknown optimizer options {sorted(unknown)}; the common ones are {list(COMMON_OPTIONS)}")
        opts = {**COMMON_OPTIONS, **options}
        clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if opts[k] is not None]
        if len(clips) > 1:
            raise ValueError(f"Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: {clips}")
        for k in clips:
            opts[k] = check_positive_float(k, opts[k])
        if opts["weight_decay"] is not None:
            opts["weight_decay"] = check_range("weight_decay", opts["weight_decay"], 0.0, np.inf)
        opts["use_ema"] = check_bool("use_ema", opts["use_ema"])
        opts["ema_momentum"] = check_range("ema_momentum", opts["ema_momentum"], 0.0, 1.0 + 1e-12)
        for k in ("ema_overwrite_frequency", "gradient_accumulation_steps"):
            if opts[k] is not None:
                opts[k] = check_positive_int(k, opts[k])
        self.options = opts

    def __getattr__(self, name):
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(name)

    # ------------------------------------------------------------ description

    def _own_config(self):
        """The optimizer's own hyperparameters (the names in `hyperparameters`) and their values."""
        return {name: getattr(self, name) for name in self.hyperparameters}

    def _set_moments(self, beta_1, beta_2, epsilon):
        """Check and set the Adam family's `beta_1`, `beta_2` in `[0, 1)` and `epsilon >= 0`."""
        self.beta_1 = check_range("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = check_range("beta_2", beta_2, 0.0, 1.0)
        self.epsilon = check_range("epsilon", epsilon, 0.0, np.inf)

    def get_config(self):
        """The constructor's keyword arguments: the optimizer's own, then common options that are set."""
        config = {"learning_rate": self.learning_rate, **self._own_config()}
        for k, default in COMMON_OPTIONS.items():
            if self.options[k] != default and not (k == "ema_momentum" and not self.options["use_ema"]):
                config[k] = self.options[k]
        return config


    # ------------------------------------------------------------ state

    def init(self, params):
        """A fresh state: iterations 0, the optimizer's slots, and the common ones in use."""
        extra = {}
        if self.options["gradient_accumulation_steps"]:
            extra["accumulated_gradients"] = zeros_like_each(params)
        if self.options["use_ema"]:
            extra["averages"] = zeros_like_each(params)
        return self.state_class(0, **self._init_slots(params), **extra)

    # ------------------------------------------------------------ the step

    def learning_rate_at(self, raw_iterations, dtype):
        """The learning rate Keras uses at this raw step, cast to `dtype`."""
        if isinstance(self.learning_rate, Schedule):
            return np.dtype(dtype).type(self.learning_rate(raw_iterations))
        return as_dtype(self.learning_rate, dtype)

    def clip(self, grads):
        """Keras's `_clip_gradients`: clipnorm per tensor, global_clipnorm or clipvalue."""
        o = self.options
        if o["clipnorm"]:
            out = []
            for g in grads:
                l2sum = np.sum(g * g)
                norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
                c = g.dtype.type(o["clipnorm"])
                out.append((g * c) / np.maximum(norm, c))
            return out
        if o["global_clipnorm"]:
            dt = grads[0].dtype
            norm = np.sqrt(np.sum(np.stack([np.sum(np.square(g)) for g in grads])))
            c = dt.type(o["global_clipnorm"])
            scale = c * np.minimum(dt.type(1.0) / norm, dt.type(1.0 / o["global_clipnorm"]))
            scale = scale + (norm - norm)
            return [g * scale for g in grads]
        if o["clipvalue"]:
            return [np.clip(g, -g.dtype.type(o["clipvalue"]), g.dtype.type(o["clipvalue"])) for g in grads]
        return grads

    def decay(self, params, raw):
        """Decoupled weight decay `w - w * wd * lr` (Keras's `_apply_weight_decay`)."""
        wd = self.options["weight_decay"]
        if wd is None:
            return params
        return [w - w * via_float32(wd, w.dtype) * self.learning_rate_at(raw, w.dtype) for w in params]

    def apply(self, params, grads, state):
        """One call of Keras's `optimizer.apply`. Pure: returns new arrays and a new state.

        Args:
            params: list of float arrays.
            grads: list of arrays shaped like `params` (cast to each parameter's dtype).
            state: this optimizer's state (from `init`, `apply` or `state_from_keras`).

        Returns:
            `(params, state)`, the state's iterations incremented by one.

        Raises:
            TypeError, ValueError: for lists of different lengths or mismatched shapes.
        """
        params, grads = check_params_grads(params, grads)
        raw = check_iterations(state)
        o = self.options
        k = o["gradient_accumulation_steps"]
        extra = {}
        update = True
        if k:
            acc = check_slots("accumulated_gradients", state.accumulated_gradients, params)
            if (raw + 1) % k == 0:
                # a division by a constant, which TensorFlow's graph optimizer turns into a product
                grads = [(g + a) * (g.dtype.type(1) / g.dtype.type(k)) for g, a in zip(grads, acc, strict=True)]
                extra["accumulated_gradients"] = zeros_like_each(params)
            else:
                update = False
                extra["accumulated_gradients"] = tuple(a + g for a, g in zip(acc, grads, strict=True))
        iterations = raw // k if k else raw
        if update:
            grads = self.clip(grads)
            decayed = self.decay(params, raw)
            new_params, new_state = self._update(decayed, grads, state._replace(iterations=iterations), lambda dt: self.learning_rate_at(raw, dt))
        else:
            new_params, new_state = params, state
        if o["use_ema"]:
            averages = check_slots("averages", state.averages, params)
            new_avg = []
            for w, avg in zip(new_params, averages, strict=True):
                m = w.dtype.type(float(iterations != 0)) * as_dtype(o["ema_momentum"], w.dtype)
                new_avg.append(m * avg + (1 - m) * w)
            extra["averages"] = tuple(new_avg)
            freq = o["ema_overwrite_frequency"]
            if freq and (iterations + 1) % freq == 0:
                new_params = [a.copy() for a in new_avg]
        return list(new_params), new_state._replace(iterations=raw + 1, **extra)
