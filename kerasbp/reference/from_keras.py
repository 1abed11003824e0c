"""The twin of what a Keras user holds: a model, an optimizer and its state, a loss, or their names.

This is the one module of `kerasbp.reference` that reads Keras objects. Keras is an optional
dependency of the twin, so each function that needs it imports it when called: importing this
module (and `kerasbp.reference`) loads NumPy only. The supported losses, optimizers and
activations, and the Keras names they go by, come from the registries `LOSSES`, `OPTIMIZERS` and
`ACTIVATIONS`.

- `get_loss`, `get_optimizer`: what every entry point of the twin calls on its `loss` and
  `optimizer` arguments: a Keras name, a twin object or a Keras object.
- `loss_from_keras`, `optimizer_from_keras`, `state_from_keras`, `layers_from_keras`: the
  twin's copy of a Keras loss, optimizer (from its configuration), optimizer state (its slot
  variables and iteration count) and `Sequential` of `Dense` layers (for `NumpyMLP.from_keras`).

Example:
    >>> get_optimizer("adam")
    Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-07, amsgrad=False)
    >>> get_loss("bce")
    BinaryCrossentropy(from_logits=False)
"""

import numpy as np

from kerasbp.checks import check_choice
from kerasbp.reference.activations import ACTIVATIONS
from kerasbp.reference.layers import Activation, BatchNormalization, Dense, Dropout
from kerasbp.reference.losses import LOSSES, loss_spec
from kerasbp.reference.optimizer_base import COMMON_OPTIONS
from kerasbp.reference.optimizers import COMMON_SLOTS, OPTIMIZERS, REFUSED
from kerasbp.reference.regularizers import REGULARIZERS
from kerasbp.reference.schedules import SCHEDULES

_TWIN_LOSSES = tuple(spec.twin for spec in LOSSES.values())
_TWIN_OPTIMIZERS = tuple(spec.twin for spec in OPTIMIZERS.values())

#: Options of a Keras Dense layer that the twin does not reproduce; each must be None.
_UNSUPPORTED_DENSE_OPTIONS = (
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


def _is_keras_object(obj):
    """Whether `obj` (an instance, or a function such as `keras.losses.mean_squared_error`) is Keras's."""
    return type(obj).__module__.startswith("keras") or getattr(obj, "__module__", "").startswith("keras")


# ---------------------------------------------------------------- losses


def get_loss(loss):
    """Return the twin's loss object for `loss`.

    Args:
        loss: a Keras name or alias (`"mean_squared_error"`, `"mse"`, `"binary_crossentropy"`,
            `"bce"`; any case), a `MeanSquaredError` / `BinaryCrossentropy` of
            `kerasbp.reference`, or a Keras loss (see `loss_from_keras`).

    Returns:
        `MeanSquaredError` or `BinaryCrossentropy` (the object itself when given one).

    Raises:
        TypeError: for anything else that is not a string.
        ValueError: for an unknown name or an unsupported Keras loss.
    """
    if isinstance(loss, _TWIN_LOSSES):
        return loss
    if isinstance(loss, str):
        return loss_spec(loss).twin()
    if _is_keras_object(loss):
        return loss_from_keras(loss)
    names = [name for spec in LOSSES.values() for name in (spec.name, *spec.aliases)]
    raise TypeError(f"`loss` must be one of {names}, a kerasbp.reference loss or a Keras loss. Received: loss={loss!r}")


def loss_from_keras(loss):
    """The twin of a Keras loss (as passed to `model.compile(loss=...)`).

    Imports Keras when called.

    Args:
        loss: a loss name, an instance of exactly one of the Keras classes of `LOSSES`
            (`keras.losses.MeanSquaredError()`, `keras.losses.BinaryCrossentropy()`), or one of
            their functions (`keras.losses.mean_squared_error`, `binary_crossentropy`).

    Returns:
        `MeanSquaredError` or `BinaryCrossentropy`, with the Keras loss's `from_logits`.

    Raises:
        TypeError: for a name that is not a string (see `get_loss`).
        ValueError: for another loss, a reduction other than `"sum_over_batch_size"`,
            `label_smoothing != 0`, or `axis != -1`, naming the option.

    Example:
        >>> import keras
        >>> loss_from_keras(keras.losses.BinaryCrossentropy(from_logits=True))
        BinaryCrossentropy(from_logits=True)
    """
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    if isinstance(loss, str):
        return get_loss(loss)
    for spec in LOSSES.values():
        if loss is getattr(keras.losses, spec.name):  # the function, e.g. keras.losses.mean_squared_error
            return spec.twin()
    spec = next((s for s in LOSSES.values() if type(loss) is getattr(keras.losses, s.keras_class)), None)
    if spec is None:
        classes = " and ".join(s.keras_class for s in LOSSES.values())
        raise ValueError(f"kerasbp.reference supports the Keras losses {classes}. Received: loss={loss!r}")
    config = loss.get_config()
    if config.get("reduction") != "sum_over_batch_size":
        raise ValueError(
            "kerasbp.reference supports reduction='sum_over_batch_size' only. "
            f"Received: reduction={config.get('reduction')!r}"
        )
    if config.get("label_smoothing", 0.0):
        raise ValueError(
            f"kerasbp.reference does not support label smoothing. Received: label_smoothing={config['label_smoothing']!r}"
        )
    if config.get("axis", -1) != -1:
        raise ValueError(f"kerasbp.reference supports axis=-1 only. Received: axis={config['axis']!r}")
    options = spec.twin().get_config()  # the options the twin has, e.g. from_logits
    return spec.twin(**{name: type(default)(config.get(name, default)) for name, default in options.items()})


# ---------------------------------------------------------------- optimizers


def get_optimizer(optimizer):
    """Return the twin optimizer for `optimizer`.

    Args:
        optimizer: a Keras name (`"sgd"`, `"adam"`, `"rmsprop"`; any case; Keras's defaults), a
            twin optimizer (`SGD`, `Adam`, `RMSprop`), or a Keras optimizer (see
            `optimizer_from_keras`).

    Returns:
        `SGD`, `Adam` or `RMSprop` (the object itself when given one).

    Raises:
        TypeError: for anything else that is not a string.
        ValueError: for an unknown name or an unsupported Keras optimizer.
    """
    if isinstance(optimizer, _TWIN_OPTIMIZERS):
        return optimizer
    if isinstance(optimizer, str):
        return OPTIMIZERS[check_choice("optimizer", optimizer, OPTIMIZERS)].twin()
    if _is_keras_object(optimizer):
        return optimizer_from_keras(optimizer)
    names = ", ".join(repr(name) for name in OPTIMIZERS)
    raise TypeError(
        f"`optimizer` must be {names}, a kerasbp.reference optimizer or a Keras optimizer. Received: optimizer={optimizer!r}"
    )


def _spec_of_keras_optimizer(keras_optimizer):
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    if not isinstance(keras_optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`keras_optimizer` must be a keras.optimizers.Optimizer. Received: keras_optimizer={keras_optimizer!r}"
        )
    cls = type(keras_optimizer)  # exactly: a subclass may change the update
    spec = next((s for s in OPTIMIZERS.values() if _same_optimizer(cls, getattr(keras.optimizers, s.keras_class))), None)
    if spec is None:
        if cls.__name__ in REFUSED:
            raise ValueError(f"kerasbp.reference does not twin the Keras optimizer {cls.__name__}: {REFUSED[cls.__name__]}")
        names = ", ".join(s.keras_class for s in OPTIMIZERS.values())
        raise ValueError(
            f"kerasbp.reference supports the Keras optimizers {names}. Received an optimizer of class {cls.__name__}"
        )
    return spec


def _same_optimizer(cls, keras_class):
    """Whether `cls` is `keras_class` itself or Keras's own implementation of it for the running
    backend: on torch, `keras.optimizers.Adam(...)` makes a
    `keras.src.backend.torch.optimizers.torch_adam.Adam` (`TorchOptimizer.__new__`), the same
    update written with `torch._foreach` operations."""
    return cls is keras_class or (issubclass(cls, keras_class) and cls.__module__.startswith("keras.src.backend."))


def _python_number(name, value):
    if callable(value) or not isinstance(value, (bool, int, float, np.floating, np.integer)):
        raise ValueError(f"kerasbp.reference supports constant Python numbers as hyperparameters. Received: {name}={value!r}")
    return value.item() if isinstance(value, (np.floating, np.integer)) else value


def schedule_from_keras(schedule):
    """The twin (`kerasbp.reference.schedules`) of a Keras learning-rate schedule.

    Raises:
        ValueError: for a schedule class the twin does not have (a custom schedule) or a callable.
    """
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    cls = SCHEDULES.get(type(schedule).__name__)
    if cls is None or type(schedule) is not getattr(keras.optimizers.schedules, type(schedule).__name__, None):
        raise ValueError(
            f"kerasbp.reference supports the learning-rate schedules {sorted(SCHEDULES)} and constant learning rates. "
            f"Received: learning_rate={schedule!r}"
        )
    config = {k: v for k, v in schedule.get_config().items() if k != "name"}
    return cls(**config)


def optimizer_from_keras(keras_optimizer):
    """The twin of a Keras optimizer, from its configuration.

    A constant learning rate is read from the optimizer's variable, so it is the value Keras
    actually uses (float32-rounded when floatx was float32 when the optimizer was made); a
    schedule of `keras.optimizers.schedules` becomes its twin (`schedule_from_keras`). The common
    options (`weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
    `ema_momentum`, `ema_overwrite_frequency`, `gradient_accumulation_steps`) are copied.
    Imports Keras.

    Args:
        keras_optimizer: an instance of exactly one of the Keras classes of `OPTIMIZERS`.

    Returns:
        The twin optimizer (`SGD`, `Adam`, `AdamW`, ...).

    Raises:
        TypeError: if `keras_optimizer` is not a Keras optimizer.
        ValueError: for a class the twin does not reproduce (Muon, ScheduleFreeAdamW, ...: naming
            the reason), a custom schedule or callable learning rate, callable hyperparameters,
            `loss_scale_factor`, or weight decay with variables excluded from it.

    Example:
        >>> import keras
        >>> optimizer_from_keras(keras.optimizers.Adam(amsgrad=True))
        Adam(learning_rate=0.0010000000474974513, beta_1=0.9, beta_2=0.999, epsilon=1e-07, amsgrad=True)
    """
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    spec = _spec_of_keras_optimizer(keras_optimizer)
    # Keras keeps a constant learning rate in a variable and a schedule or callable as itself.
    lr = keras_optimizer._learning_rate
    if isinstance(lr, keras.Variable):
        learning_rate = float(np.asarray(lr.numpy()))
    elif isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = schedule_from_keras(lr)
    else:
        raise ValueError(
            "kerasbp.reference supports a constant learning rate or a keras.optimizers.schedules schedule, not a "
            f"callable. Received: learning_rate={lr!r}"
        )
    config = keras_optimizer.get_config()
    if config.get("loss_scale_factor") is not None:
        raise ValueError(
            f"kerasbp.reference does not reproduce `loss_scale_factor`. Received: loss_scale_factor={config['loss_scale_factor']!r}"
        )
    if getattr(keras_optimizer, "_exclude_from_weight_decay", None) or getattr(keras_optimizer, "_exclude_from_weight_decay_pattern", None):
        raise ValueError("kerasbp.reference does not reproduce `exclude_from_weight_decay`")
    kwargs = {"learning_rate": learning_rate}
    for option, default in COMMON_OPTIONS.items():
        value = config.get(option, default)
        if value != default and not (option == "ema_momentum" and not config.get("use_ema")):
            kwargs[option] = _python_number(option, value)
    for name in spec.twin()._own_config():
        kwargs[name] = _python_number(name, getattr(keras_optimizer, name))
    return spec.twin(**kwargs)


def _used_slots(twin):
    """The names of the state fields `twin` keeps (SGD without momentum keeps none, ...)."""
    state = twin.init([np.zeros(1)])
    return tuple(f for f in state._fields[1:] if not isinstance(getattr(state, f), tuple) or len(getattr(state, f)))


def state_from_keras(keras_optimizer, twin=None, params=None):
    """The twin's state read from a Keras optimizer's variables: slots and iteration count.

    Args:
        keras_optimizer: a Keras optimizer of `OPTIMIZERS` (see `optimizer_from_keras`).
        twin: the twin optimizer the state is for, or None to build it with
            `optimizer_from_keras`. Its slots must be those of `keras_optimizer`. Defaults to None.
        params: list of float arrays, used only when `keras_optimizer` has not been built yet:
            the state is then `twin.init(params)` with the Keras iteration count. Defaults to None.

    Returns:
        The twin's state `NamedTuple`, with copies of the Keras slot variables in the order of
        the variables the optimizer was built on, and Keras's raw iteration count (every call of
        `apply`, also under gradient accumulation).

    Raises:
        TypeError, ValueError: as `optimizer_from_keras`; `ValueError` also if `twin` is of
            another kind or has other slots, or if the optimizer is not built and `params` is None.
    """

    spec = _spec_of_keras_optimizer(keras_optimizer)
    derived = optimizer_from_keras(keras_optimizer)
    if twin is None:
        twin = derived
    if type(twin) is not spec.twin:
        raise ValueError(
            f"`twin` must be a {spec.twin.__name__} to take the state of a Keras "
            f"{type(keras_optimizer).__name__}. Received: twin={twin!r}"
        )
    if _used_slots(twin) != _used_slots(derived):
        raise ValueError(
            f"`twin` must keep the same state slots as the Keras optimizer. Received: twin={twin!r}, "
            f"Keras optimizer as twin: {derived!r}"
        )
    iterations = int(np.asarray(keras_optimizer._iterations.numpy()))
    if not keras_optimizer.built:
        if params is None:
            raise ValueError(
                "the Keras optimizer has not been built yet (it builds on its first step), so it has no "
                "state to read: pass `params` to start from `twin.init(params)`"
            )
        return twin.init(params)._replace(iterations=iterations)
    used = _used_slots(twin)
    attributes = {**spec.keras_slots, **COMMON_SLOTS}
    slots = {}
    for field in spec.state._fields[1:]:
        if field not in used:
            slots[field] = ()
            continue
        # Keras 3 keeps most slots in private attributes (e.g. Adam's `_momentums`), named in the registry.
        variables = getattr(keras_optimizer, attributes[field])
        if isinstance(variables, (list, tuple)):
            slots[field] = tuple(np.array(v.numpy()) for v in variables)
        else:
            slots[field] = np.array(variables.numpy())
    return spec.state(iterations, **slots)


# ---------------------------------------------------------------- layers


def layers_from_keras(model):
    """The layers of a Keras `Sequential`, as twin layers for `NumpyMLP`.

    Imports Keras. The arrays are copies of the current weights, in the layers' variable dtype:
    float32 unless the model was built under a float64 dtype policy. Note that
    `keras.config.set_floatx("float64")` alone is not enough once any layer has been built in the
    process (Keras caches its global dtype policy on first use); also call
    `keras.config.set_dtype_policy("float64")` (or use `kerasbp.precision.floatx`).

    Args:
        model: a built `keras.Sequential` of `keras.layers.Dense` (an activation of
            `ACTIVATIONS`, `L1`/`L2`/`L1L2` kernel and bias regularizers, with or without bias),
            `BatchNormalization` (last axis, no renorm), `Dropout` (no `noise_shape`) and
            `Activation` layers.

    Returns:
        `(layers, dtype)`: a list of twin layers (`kerasbp.reference.Dense`, ...) and the dtype
        name of the arrays. `NumpyMLP(layers, dtype=dtype)` is the twin.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the model is not a `Sequential`, is not built, takes inputs that are
            not 2-D, or has a layer the twin does not reproduce, naming the layer and what is
            unsupported: another layer class, another activation or regularizer, an activity
            regularizer, a constraint, LoRA, quantization, a frozen layer or a mixed-precision
            dtype policy.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
        >>> layers, dtype = layers_from_keras(model)
        >>> layers, dtype
        ([Dense(units=1, activation='sigmoid')], 'float32')
    """
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if not isinstance(model, keras.Sequential):
        raise ValueError(
            "NumpyMLP.from_keras supports keras.Sequential models of Dense layers. "
            f"Received a model of class {type(model).__name__}"
        )
    if not model.built or not model.layers:
        raise ValueError(
            f"`model` must be built and hold Dense layers. Received an unbuilt or empty model {model.name!r}: "
            "give it a keras.Input(shape=(n_features,)) first"
        )
    try:
        input_shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        input_shape = None
    if input_shape is not None and len(input_shape) != 2:
        raise ValueError(
            f"NumpyMLP.from_keras supports 2-D inputs (batch, features). Received a model with input shape {input_shape}"
        )
    layers = [_twin_layer(layer) for layer in model.layers]
    dtypes = {p.dtype.name for layer in layers for p in layer.params + layer.non_trainable}
    if len(dtypes) != 1:
        raise ValueError(f"NumpyMLP.from_keras needs one dtype for all layers. Received layers of dtypes {sorted(dtypes)}")
    return layers, (dtypes.pop() if dtypes else "float32")


def _activation_name(activation, where):
    """The twin's name of a Keras activation (a string from `get_config`, or a function)."""
    import functools

    import keras  # optional dependency of the twin: imported only when a Keras object is read

    if isinstance(activation, str):
        name = activation.lower()
    elif isinstance(activation, functools.partial) and activation.func is keras.activations.gelu:
        name = "gelu_approximate" if activation.keywords.get("approximate", False) else "gelu"
    elif callable(activation) and getattr(keras.activations, getattr(activation, "__name__", ""), None) is activation:
        name = activation.__name__
    else:
        name = None
    name = "silu" if name == "swish" else name
    if name not in ACTIVATIONS:
        names = ", ".join(repr(n) for n in ACTIVATIONS)
        shown = repr(name) if name is not None else repr(activation)
        raise ValueError(f"NumpyMLP.from_keras supports the activations {names}. Unsupported activation {shown} in {where}")
    return name


def _regularizer(reg, where):
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    if reg is None:
        return None
    cls = REGULARIZERS.get(type(reg).__name__)
    if cls is None or type(reg) is not getattr(keras.regularizers, type(reg).__name__, None):
        raise ValueError(f"NumpyMLP.from_keras supports the regularizers L1, L2 and L1L2. Unsupported in {where}: {reg!r}")
    return cls(**{k: float(v) for k, v in reg.get_config().items()})


def _check_plain(layer, where):
    if not layer.trainable and layer.weights:
        raise ValueError(
            f"NumpyMLP.from_keras supports trainable layers only (a frozen layer's weights are not in "
            f"model.trainable_weights). Unsupported in {where}: trainable=False"
        )
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:
        raise ValueError(f"NumpyMLP.from_keras does not support mixed precision. Unsupported dtype policy in {where}: {policy.name!r}")


def _twin_layer(layer):
    """The twin layer of one Keras layer, refusing what the twin cannot copy."""
    import keras  # optional dependency of the twin: imported only when a Keras object is read

    where = f"layer {layer.name!r}"
    cls = type(layer)
    if cls is keras.layers.Dense:
        return _dense_layer(layer)
    _check_plain(layer, where)
    if cls is keras.layers.Activation:
        return Activation(_activation_name(layer.activation, where))
    if cls is keras.layers.Dropout or getattr(cls, "_kerasbp_recording_dropout", False):
        if layer.noise_shape is not None:
            raise ValueError(f"NumpyMLP.from_keras does not support Dropout's `noise_shape`. Unsupported in {where}")
        return Dropout(layer.rate)
    if cls is keras.layers.BatchNormalization:
        config = layer.get_config()
        if config["axis"] not in (-1, 1) or config.get("renorm") or config.get("synchronized") or layer.input.shape[-1] is None:
            raise ValueError(
                f"NumpyMLP.from_keras supports BatchNormalization on the last axis of 2-D inputs, without renorm or "
                f"synchronization. Unsupported in {where}"
            )
        for option in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"):
            if config.get(option) is not None:
                raise ValueError(f"NumpyMLP.from_keras does not support `{option}`. Unsupported in {where}")
        gamma = np.array(layer.gamma.numpy()) if layer.scale else None
        beta = np.array(layer.beta.numpy()) if layer.center else None
        mm, mv = np.array(layer.moving_mean.numpy()), np.array(layer.moving_variance.numpy())
        return BatchNormalization(gamma, beta, mm, mv, momentum=layer.momentum, epsilon=layer.epsilon, dtype=mm.dtype.name)
    raise ValueError(
        "NumpyMLP.from_keras supports Dense, BatchNormalization, Dropout and Activation layers. "
        f"Unsupported {where} of class {cls.__name__}"
    )


def _dense_layer(layer):
    """The twin `Dense` of one Keras Dense layer, refusing what the twin cannot copy."""

    where = f"layer {layer.name!r}"
    activation = _activation_name(layer.activation, where)  # attributes, not get_config: a partial has none
    for option in _UNSUPPORTED_DENSE_OPTIONS:
        if getattr(layer, option, None) is not None:
            raise ValueError(f"NumpyMLP.from_keras does not support `{option}`. Unsupported in {where}: {getattr(layer, option)!r}")
    if getattr(layer, "lora_enabled", False):
        raise ValueError(f"NumpyMLP.from_keras does not support LoRA. Unsupported in {where}")
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"NumpyMLP.from_keras does not support quantization. Unsupported in {where}: "
            f"quantization_mode={layer.quantization_mode!r}"
        )
    if not layer.trainable:
        raise ValueError(
            f"NumpyMLP.from_keras supports trainable layers only (a frozen layer's weights are not in "
            f"model.trainable_weights). Unsupported in {where}: trainable=False"
        )
    _check_plain(layer, where)
    kernel = np.array(layer.kernel.numpy())
    bias = np.array(layer.bias.numpy()) if layer.use_bias else None
    return Dense(
        kernel,
        bias,
        activation,
        _regularizer(layer.kernel_regularizer, where),
        _regularizer(layer.bias_regularizer, where),
        dtype=kernel.dtype.name,
    )
