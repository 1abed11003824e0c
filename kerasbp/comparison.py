"""compare: a Keras model against its NumPy twin, step by step.

`compare` trains a copy of a compiled Keras model on consecutive batches (as `fit` with
`shuffle=False`), recording with a `GradientLogger` the gradients Keras applied at each step,
and runs the NumPy twin (`kerasbp.reference`) beside it two ways:

- teacher-forced: at every step the twin starts from Keras's weights and optimizer state of that
  step; its own loss and gradients check the chain rule and the loss, and its update rule,
  applied to the gradient Keras applied, checks the optimizer. Each step is checked on its own,
  and an update rule like Adam's, which divides a gradient by its own size, does not turn an
  ulp-level gradient difference into an update difference.
- free-running: the twin follows its own trajectory from the same initial weights. Differences
  here can grow through chaotic amplification even when every single step agrees (rounding
  differences of 1 ulp double every few steps in a chaotic regime), so they are reported but do
  not decide `report.ok`.

Each difference is measured against the scale of what it checks, and the tolerances depend on
the dtype (`TOLERANCES`; on JAX and torch, where Keras computes some float64 operations in
float32, a float64 model is judged with float32's: `kerasbp.comparison_report.tolerances`):

- loss: `|diff| / |Keras loss|`;
- gradient: `max |diff|` over the size of the terms the gradient adds up over the batch
  (`max(|a_prev|^T |delta|)` for a kernel, `max(sum |delta|)` for a bias, and at least
  `max |Keras gradient|`), per variable: a gradient that is small because its terms cancel keeps
  the rounding error of those terms, so it is judged against them; and only what is left of
  `max |diff|` beyond `16 eps max(1, |y|) / n` is judged (the rounding of O(1) probabilities and
  targets before they cancel in `p - y` at a saturated output: measured 2.2e-16 on a float64
  bias gradient of 2e-6 after 184 Lamb steps);
- weights after the step: what is left of `max |diff|` beyond 2 ulps of the weights (the
  rounding of `w + update` on each side), divided by the size of Keras's update
  `max |w_after - w_before|`. An update rule is checked against the update it makes, not
  against the weights, which can be a million times larger.
- learning rate, with a schedule: `|diff|` between the twin's schedule and the rate Keras used
  at the step, over the largest rate Keras used in the run (a rate near the end of a cosine
  decay keeps the absolute rounding error of `1 + cos`, not a relative one). Teacher-forced, the twin's update rule then runs at
  Keras's rate, so that a schedule's last-ulp differences (TensorFlow's float32 `cos` is not
  correctly rounded) do not count as update-rule differences;
- moving statistics of BatchNormalization after the step (teacher-forced: the twin's
  moving-average update from Keras's statistics before the step): as the weights, against the
  size of Keras's change of them.
"""

import math

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_array, check_dtype, check_positive_int, check_xy
from kerasbp.comparison_report import TOLERANCES, ComparisonReport, changed_differences, relative_difference  # noqa: F401  (re-exported)
from kerasbp.data import batch_slices
from kerasbp.logger import GradientLogger
from kerasbp.models import keras_loss
from kerasbp.native_logs import quiet_native_logs
from kerasbp.precision import floatx
from kerasbp.reference import OPTIMIZERS, NumpyMLP, get_loss, optimizer_from_keras, state_from_keras
from kerasbp.reference.schedules import Schedule

def _term_sizes(twin, result):
    """Per parameter array, the size of the batch terms its gradient sums (see the module docstring)."""
    from kerasbp.reference.layers import Dense

    sizes, deltas = [], iter(result.deltas)
    grads = iter(result.grads)
    for layer, cache in zip(twin.layers, twin._caches, strict=True):
        penalty_grads = layer.penalty()[1]
        own = [next(grads) for _ in layer.params]
        if isinstance(layer, Dense):
            delta = next(deltas)
            terms = [float(np.max(np.abs(cache.x).T @ np.abs(delta)))]  # kernel (units_in, units)
            if layer.bias is not None:
                terms.append(float(np.max(np.sum(np.abs(delta), axis=0))))  # bias (units,)
        else:
            terms = [float(np.max(np.abs(g))) for g in own]
        for t, pg in zip(terms, penalty_grads, strict=True):
            sizes.append(max(t, float(np.max(np.abs(pg))) if pg.size else 0.0))
    return sizes


_RECORDING = {}


def _recording_dropout():
    """A `keras.layers.Dropout` that draws its mask exactly as Keras's `Dropout` does and keeps
    it (`_keep_mask`), so that the twin can apply the same mask. On TensorFlow it calls
    `tf.nn.experimental.stateless_dropout` twice with one seed drawn from the layer's seed
    generator (once on a tensor of ones, for the mask), as Keras's TensorFlow backend does once;
    on JAX and torch it draws Keras's dropout of a tensor of ones from the seed generator and
    applies it as their backends do (`keras/src/backend/{jax,torch}/random.py`):
    `where(mask, inputs / (1 - rate), 0)`."""
    if "cls" in _RECORDING:
        return _RECORDING["cls"]

    class RecordingDropout(keras.layers.Dropout):
        _kerasbp_recording_dropout = True

        def call(self, inputs, training=False):
            if not (training and 0 < self.rate < 1):
                return inputs
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf
                from keras.src.backend.tensorflow.random import _cast_seed
                from keras.src.random.seed_generator import draw_seed

                seed = _cast_seed(draw_seed(self.seed_generator))
                out = tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed)
                mask = tf.nn.experimental.stateless_dropout(tf.ones_like(inputs), rate=self.rate, seed=seed)
                _keep_mask(self, tf.cast(tf.not_equal(mask, 0), inputs.dtype))
                return out
            ops = keras.ops
            kept = ops.not_equal(keras.random.dropout(ops.ones_like(inputs), self.rate, seed=self.seed_generator), 0)
            _keep_mask(self, ops.cast(kept, inputs.dtype))
            return ops.where(kept, ops.divide(inputs, 1.0 - self.rate), ops.zeros_like(inputs))

    _RECORDING["cls"] = RecordingDropout
    return RecordingDropout


def _keep_mask(layer, mask):
    """Store `mask` (the `(batch, units)` tensor a `RecordingDropout` drew in its train step) where
    `_mask` reads it: on TensorFlow in the layer's `tf.Variable` (the step is a traced graph), on
    JAX through a host callback out of the jitted step, on torch (eager) as it is."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        layer.__dict__["_kbp_mask"].assign(mask)
    elif backend == "jax":
        import jax

        jax.debug.callback(lambda m: layer.__dict__.__setitem__("_kbp_mask", np.array(m)), mask, ordered=True)
    else:
        layer.__dict__["_kbp_mask"] = keras.ops.convert_to_numpy(mask)


def _mask(layer):
    """The mask the `RecordingDropout` `layer` drew in the last train step, a NumPy array."""
    if keras.backend.backend() == "jax":
        import jax

        jax.effects_barrier()  # the host callback of the step has run
    return np.array(keras.ops.convert_to_numpy(layer.__dict__["_kbp_mask"]))


def _copy(model, dtype):
    """A fresh copy of a Sequential in `dtype`, with the same weights (Dropout layers recording
    their masks), and a new optimizer of the same configuration."""
    layers = [keras.Input(shape=model.inputs[0].shape[1:])]
    for layer in model.layers:
        # The activation function itself is shared, not serialized: Keras cannot serialize
        # e.g. `functools.partial(keras.activations.gelu, approximate=True)`.
        activation = getattr(layer, "activation", None)
        if activation is not None:
            layer.activation = keras.activations.linear
        try:
            with quiet_native_logs():  # on JAX and torch, Keras's first serialization imports TensorFlow if installed
                config = layer.get_config()
        finally:
            if activation is not None:
                layer.activation = activation
        config["dtype"] = dtype
        cls = _recording_dropout() if isinstance(layer, keras.layers.Dropout) else type(layer)
        copied = cls.from_config(config)
        if activation is not None:
            copied.activation = activation
        layers.append(copied)
    copy = keras.Sequential(layers, name=f"{model.name}_copy")
    for src, dst in zip(model.layers, copy.layers, strict=True):
        dst.set_weights([w.astype(dtype) for w in src.get_weights()])
        if isinstance(dst, keras.layers.Dropout) and keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # a variable of any batch size, assigned inside the traced step

            width = dst.input.shape[-1]
            dst.__dict__["_kbp_mask"] = tf.Variable(tf.zeros((1, width), dtype), shape=tf.TensorShape([None, width]), trainable=False)
    optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
    return copy, optimizer


class _ApplyRecorder:
    """The part of `GradientLogger` that `compare` uses, by wrapping `optimizer.apply`."""

    def __init__(self, model, optimizer):
        import tensorflow as tf

        self.model, self.losses, self.learning_rates, self._grads = model, [], [], None
        self.names = [v.path for v in model.trainable_variables]
        self._lr = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        original = optimizer.apply

        def apply(grads, trainable_variables=None):
            if self._grads is None:
                self._grads = [tf.Variable(tf.zeros_like(g), trainable=False) for g in grads]
            for var, g in zip(self._grads, grads, strict=True):
                var.assign(g)
            self._lr.assign(tf.cast(optimizer._get_current_learning_rate(), tf.float64))  # as apply computes it
            return original(grads, trainable_variables)

        optimizer.apply = apply

    def set_model(self, model):
        pass

    def set_params(self, params):
        pass

    def on_train_begin(self):
        pass

    def on_train_end(self):
        pass

    def on_train_batch_begin(self, i):
        for metric in self.model.metrics:
            metric.reset_state()

    def on_train_batch_end(self, i):
        self.losses.append(float(self.model.get_metrics_result()["loss"]))
        self.learning_rates.append(float(self._lr.numpy()))

    def last_gradients(self):
        return [np.array(g.numpy()) for g in self._grads]


def compare(model, X, y, epochs=1, batch_size=None, loss=None, dtype=None, sample_weight=None, class_weight=None):
    """Train a copy of `model` and its NumPy twin on the same batches; compare every step.

    The copy starts from `model`'s current weights with a fresh optimizer of the same
    configuration; `model` itself is not changed. Batches are consecutive slices of `X`, the last
    partial batch kept (as `fit(shuffle=False)`); each Keras step is the model's own train step
    (`train_on_batch`), its applied gradient captured by a `GradientLogger`, and the mask each
    Dropout layer drew is captured and handed to the twin.

    Args:
        model: a compiled `keras.Sequential` of layers `NumpyMLP.from_keras` reads (Dense with
            regularizers, BatchNormalization, Dropout, Activation) and an optimizer of
            `kerasbp.reference.OPTIMIZERS` with any common option and schedule.
        X: float array of shape `(n_samples, n_features)`.
        y: targets `(n_samples, n_outputs)` or `(n_samples,)` (integer labels for a sparse loss).
        epochs: int >= 1. Defaults to 1.
        batch_size: int >= 1, or None for 32 as in Keras. Defaults to None.
        loss: a loss `kerasbp.reference.get_loss` accepts, or None for the model's compiled
            loss. The copy is compiled with its Keras equivalent. Defaults to None.
        dtype: `"float32"`, `"float64"`, or None for the model's variable dtype. Defaults to None.
        sample_weight: None or float array `(n_samples,)`. Defaults to None.
        class_weight: None or dict `{class: weight}` (not together with `sample_weight`, as in
            Keras's `train_on_batch`). Defaults to None.

    Returns:
        `ComparisonReport`.

    Raises:
        ValueError: for a model, loss or optimizer the twin does not support (naming it), an
            uncompiled model, or bad arrays or hyperparameters.
        TypeError: for arguments of the wrong type.

    Example:
        >>> import kerasbp as kb
        >>> X, y = kb.xor_data()
        >>> model = kb.compile_model(kb.xor_model(seed=0), "adam", loss="binary_crossentropy")
        >>> kb.compare(model, X, y, epochs=5, batch_size=3).ok
        True
    """
    from kerasbp.reference import class_weight_to_sample_weight
    from kerasbp.reference.loss_objects import check_sample_weight

    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a compiled keras.Model. Received: model={model!r}")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("`model` must be compiled: call compile_model(model, ...) first")
    NumpyMLP.from_keras(model)  # refuses unsupported layers and activations, naming them
    optimizer_from_keras(model.optimizer)  # refuses unsupported optimizers and options
    epochs = check_positive_int("epochs", epochs)
    batch_size = 32 if batch_size is None else check_positive_int("batch_size", batch_size)
    dtype = check_dtype("dtype", dtype or model.trainable_weights[0].dtype)
    if dtype not in TOLERANCES:
        raise ValueError(f"`dtype` must be one of {list(TOLERANCES)}. Received: dtype={dtype!r}")
    loss = loss if loss is not None else model.loss
    if loss is None:
        raise ValueError("`loss` must be given for a model compiled without a loss")
    twin_loss = get_loss(loss)  # refuses unsupported losses
    if sample_weight is not None and class_weight is not None:
        raise ValueError("`sample_weight` and `class_weight` cannot be given together (as in Keras's train_on_batch)")
    if twin_loss.name == "sparse_categorical_crossentropy":
        X = check_array("X", X, dtype=dtype)
        y = np.asarray(y)
        twin_loss.prepare(y, np.zeros((len(X), model.outputs[0].shape[-1]), dtype))  # checks the labels
    else:
        X, y = check_xy(X, y, n_features=model.inputs[0].shape[-1], n_outputs=model.outputs[0].shape[-1], dtype=dtype)
    if class_weight is not None:
        sample_weight = class_weight_to_sample_weight(y, class_weight, dtype)
    sample_weight = check_sample_weight(sample_weight, len(X), dtype)

    with floatx(dtype):
        copy, keras_optimizer = _copy(model, dtype)
        copy.compile(optimizer=keras_optimizer, loss=keras_loss(twin_loss))
        twin_optimizer = optimizer_from_keras(keras_optimizer)
        teacher = NumpyMLP.from_keras(copy)
        free = NumpyMLP.from_keras(copy)
        free_state = twin_optimizer.init(free.params)
        batches = batch_slices(len(X), batch_size)
        # On TensorFlow the GradientLogger cannot hook the conditional update of gradient
        # accumulation: there, the applied gradients are read by a plain wrapper of `apply`.
        accumulating = keras_optimizer.gradient_accumulation_steps and keras.backend.backend() == "tensorflow"
        logger = _ApplyRecorder(copy, keras_optimizer) if accumulating else GradientLogger(record="full")
        logger.set_model(copy)
        logger.set_params({"steps": len(batches), "epochs": epochs})
        keras_before, keras_w, keras_g, twin_losses, scales, slacks = [], [], [], [], [], []
        keras_moving_before, keras_moving, lr_pairs = [], [], []
        scheduled = isinstance(twin_optimizer.learning_rate, Schedule)
        diverged_at, free_ok = None, True
        modes = {m: {"loss": [], "gradient": [], "weights": [], "moving": []} for m in ("teacher", "free")}
        moving_variables = [v for v in copy.non_trainable_weights if "seed_generator" not in v.path]
        dropouts = [layer for layer in copy.layers if isinstance(layer, keras.layers.Dropout)]
        # Build the copy and its optimizer before reading state: one step of the train function
        # would do it, but then we would not see the state before the first step.
        copy._symbolic_build(data_batch=(X[:1], y[:1], None))
        if not keras_optimizer.built:
            keras_optimizer.build(copy.trainable_variables)
        logger.on_train_begin()
        # overflow in a diverging run is reported as such, not as NumPy warnings
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                for _ in range(epochs):
                    for i, batch in enumerate(batches):
                        xb, yb = X[batch], y[batch]
                        sw = None if sample_weight is None else sample_weight[batch]
                        before = [np.array(v.numpy()) for v in copy.trainable_weights]
                        moving = [np.array(v.numpy()) for v in moving_variables]
                        state = state_from_keras(keras_optimizer, twin_optimizer)
                        # Keras's step, its applied gradient captured by the logger
                        logger.on_train_batch_begin(i)
                        copy.train_on_batch(xb, yb, sample_weight=sw)
                        logger.on_train_batch_end(i)
                        masks = [_mask(d) for d in dropouts] if dropouts else None
                        keras_grads = logger.last_gradients()
                        after = [np.array(v.numpy()) for v in copy.trainable_weights]
                        if not all(np.isfinite(a).all() for a in keras_grads + after + [logger.losses[-1:]]):
                            diverged_at = len(keras_w)
                            break
                        # teacher-forced: from Keras's weights and state, the twin's own loss and
                        # gradient (checking backprop), and its update rule applied to Keras's
                        # gradient (checking the optimizer on its own)
                        teacher.set_params(before)
                        if moving:
                            teacher.set_non_trainable(moving)
                        t_result = teacher.backward(xb, yb, twin_loss, sample_weight=sw, dropout_masks=masks)
                        t_loss, t_grads = t_result.loss, t_result.grads
                        teacher._update_moving()
                        t_moving = teacher.non_trainable
                        scales.append(_term_sizes(teacher, t_result))
                        # the rounding of O(1) probabilities and targets before they cancel in p - y
                        slacks.append(16 * float(np.finfo(dtype).eps) * max(1.0, float(np.max(np.abs(yb)))) / len(xb))
                        keras_lr = float(logger.learning_rates[-1])
                        if scheduled:
                            lr_pairs.append((keras_lr, float(twin_optimizer.learning_rate_at(state.iterations, "float32"))))
                        t_params, _ = _apply_at(twin_optimizer, before, keras_grads, state, keras_lr if scheduled else None)
                        # free-running: the twin's step from its own weights and state
                        if free_ok:
                            f_loss, _, f_grads = free.backward(xb, yb, twin_loss, sample_weight=sw, dropout_masks=masks)
                            free._update_moving()
                            f_moving = free.non_trainable
                            f_params, free_state = twin_optimizer.apply(free.params, f_grads, free_state)
                            free_ok = all(np.isfinite(p).all() for p in f_params)
                            if free_ok:
                                free.set_params(f_params)
                        if not free_ok:  # the twin alone diverged: nothing left to compare
                            f_loss, f_grads, f_params = np.nan, [np.full(np.shape(g), np.nan) for g in t_grads], [np.full(np.shape(p), np.nan) for p in t_params]
                            f_moving = [np.full(np.shape(m), np.nan) for m in t_moving]
                        keras_before.append(before)
                        keras_w.append(after)
                        keras_g.append(keras_grads)
                        keras_moving_before.append(moving)
                        keras_moving.append([np.array(v.numpy()) for v in moving_variables])
                        twin_losses.append(float(f_loss))
                        for mode, (l, g, w, m) in (("teacher", (t_loss, t_grads, t_params, t_moving)), ("free", (f_loss, f_grads, f_params, f_moving))):
                            modes[mode]["loss"].append(float(l))
                            modes[mode]["gradient"].append(g)
                            modes[mode]["weights"].append(w)
                            modes[mode]["moving"].append(m)
                    if diverged_at is not None:
                        break
            finally:
                logger.on_train_end()
    keras_losses = logger.losses[: len(keras_w)]
    results = {}
    for mode, d in modes.items():
        out = {}
        loss_abs = np.abs(np.array(d["loss"]) - keras_losses)
        out["loss_abs"] = loss_abs
        out["loss_rel"] = np.array([relative_difference(a, abs(k)) for a, k in zip(loss_abs, keras_losses, strict=True)])
        # no rate where the step did not update (a gradient accumulation micro-step)
        lr_abs = np.array([abs(k - t) if math.isfinite(k) else 0.0 for k, t in lr_pairs] if lr_pairs else np.zeros(len(keras_losses)))
        largest = max((abs(k) for k, _ in lr_pairs if math.isfinite(k)), default=0.0)
        out["learning_rate_abs"] = lr_abs
        out["learning_rate_rel"] = np.array([relative_difference(a, largest) for a in lr_abs])
        steps, n_vars = len(keras_losses), len(logger.names)
        out["gradient_abs"], out["gradient_rel"] = np.zeros((steps, n_vars)), np.zeros((steps, n_vars))
        for k in range(steps):
            for j in range(n_vars):
                kg, tg = np.asarray(keras_g[k][j], np.float64), np.asarray(d["gradient"][k][j], np.float64)
                out["gradient_abs"][k, j] = a = np.max(np.abs(kg - tg))
                # differences in float's subnormal range are rounding, whatever their relative size
                slack = 1024 * np.finfo(dtype).tiny + slacks[k]
                out["gradient_rel"][k, j] = relative_difference(max(0.0, a - slack), max(np.max(np.abs(kg)), scales[k][j]))
        out["weights_abs"], out["weights_rel"] = changed_differences(keras_before, keras_w, d["weights"], n_vars)
        out["moving_abs"], out["moving_rel"] = changed_differences(keras_moving_before, keras_moving, d["moving"], len(moving_variables))
        results[mode] = out
    return ComparisonReport(
        diverged_at,
        dtype,
        list(logger.names),
        np.asarray(keras_losses, np.float64),
        np.asarray(twin_losses, np.float64),
        results["teacher"],
        results["free"],
        epochs,
        batch_size,
        repr(twin_optimizer),
        type(twin_loss).__name__,
        OPTIMIZERS[twin_optimizer.name].keras_class,
        moving_names=[v.path for v in moving_variables],
        scheduled=scheduled,
        backend=keras.backend.backend(),
    )


def _apply_at(optimizer, params, grads, state, learning_rate):
    """`optimizer.apply(params, grads, state)` at the given learning rate of this step (a float),
    in place of the optimizer's schedule, or at its own where `learning_rate` is None or NaN."""
    if learning_rate is None or not math.isfinite(learning_rate):
        return optimizer.apply(params, grads, state)
    schedule = optimizer.learning_rate
    optimizer.learning_rate = _Constant(learning_rate)
    try:
        return optimizer.apply(params, grads, state)
    finally:
        optimizer.learning_rate = schedule


class _Constant(Schedule):
    """A schedule that is `value` (a float32 number) at every step."""

    def __init__(self, value):
        self.value = np.float32(value)

    def __call__(self, step):
        return self.value
