"""Thin model factories for the teaching networks, `compile_model`, and `keras_loss`.

Every model is a `keras.Sequential` of `Dense` layers, so the NumPy twin
(`kerasbp.reference.NumpyMLP.from_keras`) can copy it. The activations, optimizers and losses on
offer are those of the twin's registries (`kerasbp.reference.ACTIVATIONS`, `OPTIMIZERS`,
`LOSSES`), which name the Keras class of each.
"""

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.checks import check_choice, check_layers, check_positive_float, check_positive_int, check_seed
from kerasbp.reference import LOSSES, OPTIMIZERS, get_activation, get_loss


def layer_dtype():
    """The dtype the factories build layers in: None (Keras's global policy) when that policy is
    a mixed one the user set (`keras.config.set_dtype_policy("mixed_float16")`), else
    `keras.config.floatx()`.

    Keras fixes its global dtype policy the first time a layer asks for it, so a later
    `keras.config.set_floatx("float64")` alone would still give float32 layers
    (`keras/src/dtype_policies/dtype_policy.py`); the factories honour floatx all the same.
    """
    policy = keras.config.dtype_policy()
    return None if policy.name.startswith("mixed") else keras.config.floatx()


def dense_model(layer_sizes, activations, seed=None):
    """A `Sequential` stack of `Dense` layers.

    Kernels use Glorot-uniform initialization and biases start at zero, as in `keras.layers.Dense`.

    Args:
        layer_sizes: sequence of ints `[n_inputs, units_1, ..., units_L]`: the input width, then the
            units of each of the L Dense layers.
        activations: one activation for every layer, or a sequence of L, each a name of
            `kerasbp.reference.ACTIVATIONS` (`"linear"`, `"sigmoid"`, `"tanh"`, `"relu"`; any case)
            or None for `"linear"`, as in Keras.
        seed: int or None. The same seed gives the same initial weights (layer i is initialized
            with seed `seed + i`); None draws them from Keras's global generator. Defaults to None.

    Returns:
        A built `keras.Sequential` in `keras.config.floatx()`, or in the mixed dtype policy the
        user set (`layer_dtype`).

    Raises:
        TypeError, ValueError: for sizes that are not positive integers, fewer than two sizes, an
            unknown activation, or a number of activations that is not L.

    Example:
        >>> model = dense_model([2, 4, 1], ["sigmoid", "sigmoid"], seed=0)
        >>> [w.shape for w in model.get_weights()]
        [(2, 4), (4,), (4, 1), (1,)]
    """
    sizes, activations = check_layers(layer_sizes, activations)
    activations = [get_activation(a, f"activations[{i}]").name for i, a in enumerate(activations)]
    seed = check_seed(seed)
    dtype = layer_dtype()
    layers = [keras.Input(shape=(sizes[0],), dtype=None if dtype is None else keras.config.floatx())]
    for i, (units, activation) in enumerate(zip(sizes[1:], activations, strict=True)):
        init = keras.initializers.GlorotUniform(seed=None if seed is None else (seed + i) % 2**31)
        layers.append(keras.layers.Dense(units, activation=activation, kernel_initializer=init, name=f"dense_{i}", dtype=dtype))
    return keras.Sequential(layers)


def xor_model(hidden_units=4, activation="sigmoid", output_activation="sigmoid", seed=None):
    """The classic NumPy XOR example's 2-4-1 network: `Input(2) -> Dense(hidden_units) -> Dense(1)`.

    Args:
        hidden_units: int >= 1, units of the hidden layer. Defaults to 4.
        activation: hidden activation, one of `"linear"`, `"sigmoid"`, `"tanh"`, `"relu"`, or
            None for `"linear"`. Defaults to `"sigmoid"`.
        output_activation: output activation, same choices. Defaults to `"sigmoid"`.
        seed: int or None, see `dense_model`. Defaults to None.

    Returns:
        `keras.Sequential`.

    Raises:
        TypeError, ValueError: as `dense_model`.
    """
    hidden_units = check_positive_int("hidden_units", hidden_units)
    return dense_model([2, hidden_units, 1], [activation, output_activation], seed=seed)


def linear_model(n_features=1, seed=None):
    """Linear regression as a network: `Input(n_features) -> Dense(1)` with no activation.

    Args:
        n_features: int >= 1, the number of inputs. Defaults to 1.
        seed: int or None, see `dense_model`. Defaults to None.

    Returns:
        `keras.Sequential`.

    Raises:
        TypeError, ValueError: as `dense_model`.
    """
    n_features = check_positive_int("n_features", n_features)
    return dense_model([n_features, 1], ["linear"], seed=seed)


def compile_model(model, optimizer="sgd", learning_rate=None, loss="mse", **compile_kwargs):
    """Compile `model` with a named optimizer and loss.

    Args:
        model: a `keras.Model`.
        optimizer: a name of `kerasbp.reference.OPTIMIZERS` (`"sgd"`, `"adam"` or `"rmsprop"`;
            any case), which gives the Keras class, or a `keras.optimizers.Optimizer` instance.
            Defaults to `"sgd"`.
        learning_rate: positive float, or None to keep Keras's default for that optimizer
            (0.01 for SGD, 0.001 for Adam and RMSprop). Must be None when `optimizer` is an
            instance. Defaults to None.
        loss: a Keras loss name (`"mse"`, `"binary_crossentropy"`, ...) or a `keras.losses.Loss`.
            Defaults to `"mse"`.
        **compile_kwargs: passed on to `model.compile` (e.g. `metrics`, `steps_per_execution`).

    Returns:
        The same `model`, compiled.

    Raises:
        TypeError: if `model` is not a Keras model, or `optimizer` is neither a name nor an
            optimizer.
        ValueError: for an unknown optimizer or loss name, or a learning rate that is not a
            positive finite number.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        if learning_rate is not None:
            raise ValueError(
                "`learning_rate` must be None when `optimizer` is an Optimizer instance (set it on the "
                f"instance). Received: learning_rate={learning_rate!r}"
            )
        opt = optimizer
    elif isinstance(optimizer, str):
        name = check_choice("optimizer", optimizer, OPTIMIZERS)
        kwargs = {}
        if learning_rate is not None:
            kwargs["learning_rate"] = check_positive_float("learning_rate", learning_rate)
            finfo = np.finfo(keras.config.floatx())
            if not float(finfo.smallest_normal) <= learning_rate <= float(finfo.max):
                raise ValueError(
                    f"`learning_rate` must be representable in {keras.config.floatx()} (between {finfo.smallest_normal:.3g} "
                    f"and {finfo.max:.3g}), where Keras stores it. Received: learning_rate={learning_rate!r}"
                )
        opt = getattr(keras.optimizers, OPTIMIZERS[name].keras_class)(**kwargs)
    else:
        raise TypeError(
            f"`optimizer` must be one of {list(OPTIMIZERS)} or a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    if loss is None:
        raise ValueError("`loss` must be a Keras loss name such as 'mse' or 'binary_crossentropy', or a keras.losses.Loss. Received: loss=None")
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except ValueError:
            raise ValueError(
                f"`loss` must be a Keras loss name such as 'mse' or 'binary_crossentropy'. Received: loss={loss!r}"
            ) from None
    model.compile(optimizer=opt, loss=loss, **compile_kwargs)
    return model


def keras_loss(loss):
    """The Keras loss object that computes what the twin's loss for `loss` computes.

    The way back from the twin to Keras, through `kerasbp.reference.LOSSES`: it lets a twin loss
    object stand wherever a Keras loss is needed (`explain_backprop`, `compare`).

    Args:
        loss: anything `kerasbp.reference.get_loss` accepts: a name (`"mse"`,
            `"binary_crossentropy"`, ...), a twin loss (`kerasbp.reference.MeanSquaredError()`,
            `BinaryCrossentropy(from_logits=...)`) or a supported Keras loss.

    Returns:
        A new `keras.losses.MeanSquaredError` or `keras.losses.BinaryCrossentropy` with the same
        options (`from_logits`) and Keras's default reduction `"sum_over_batch_size"`.

    Raises:
        TypeError, ValueError: as `kerasbp.reference.get_loss`, for a loss the twin does not
            support.

    Example:
        >>> from kerasbp.reference import BinaryCrossentropy
        >>> keras_loss(BinaryCrossentropy(from_logits=True)).get_config()["from_logits"]
        True
    """
    twin = get_loss(loss)
    return getattr(keras.losses, LOSSES[twin.name].keras_class)(**twin.get_config())
