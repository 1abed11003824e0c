import doctest

import keras
import numpy as np
import pytest

import kerasbp.models
from kerasbp import compile_model, dense_model, linear_model, xor_model


def test_xor_model_layers():
    model = xor_model(hidden_units=3, activation="tanh", seed=0)
    assert [w.shape for w in model.get_weights()] == [(2, 3), (3,), (3, 1), (1,)]
    assert [layer.activation.__name__ for layer in model.layers] == ["tanh", "sigmoid"]
    assert model.input_shape == (None, 2)


def test_linear_model_layers():
    model = linear_model(n_features=3, seed=0)
    assert [w.shape for w in model.get_weights()] == [(3, 1), (1,)]
    assert model.layers[0].activation.__name__ == "linear"


def test_dense_model_any_stack_and_biases_start_at_zero():
    model = dense_model([5, 8, 6, 2], ["relu", "tanh", "linear"], seed=3)
    assert [w.shape for w in model.get_weights()] == [(5, 8), (8,), (8, 6), (6,), (6, 2), (2,)]
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "tanh", "linear"]
    for bias in model.get_weights()[1::2]:
        np.testing.assert_array_equal(bias, 0)
    # Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out))
    assert np.abs(model.get_weights()[0]).max() <= np.sqrt(6 / 13)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (xor_model(seed=s).get_weights() for s in (7, 7, 8))
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    "args, error, match",
    [
        (([2], "relu"), ValueError, "at least one layer"),
        (([2, 0, 1], "relu"), ValueError, r"`layer_sizes\[1\]` must be a positive integer. Received: layer_sizes\[1\]=0"),
        (([2, 4, 1], ["relu"]), ValueError, r"one name per Dense layer \(2\)"),
        (([2, 4, 1], "hard_sigmoid"), ValueError, r"`activations\[0\]` must be one of .*Received: activations\[0\]='hard_sigmoid'"),
        (("24", "relu"), TypeError, "list of positive integers"),
    ],
    ids=["too-short", "zero-units", "activation-count", "unknown-activation", "string-sizes"],
)
def test_dense_model_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        dense_model(*args)


def test_factories_bad_arguments():
    with pytest.raises(ValueError, match="hidden_units"):
        xor_model(hidden_units=0)
    with pytest.raises(TypeError, match="n_features"):
        linear_model(n_features=1.5)
    with pytest.raises(ValueError, match="seed"):
        xor_model(seed=-1)


@pytest.mark.parametrize(
    "name, cls, default_lr",
    [("sgd", keras.optimizers.SGD, 0.01), ("Adam", keras.optimizers.Adam, 0.001), ("RMSPROP", keras.optimizers.RMSprop, 0.001)],
    ids=["sgd", "adam", "rmsprop"],
)
def test_compile_model_optimizer_names(name, cls, default_lr):
    model = compile_model(linear_model(seed=0), name)
    assert type(model.optimizer) is cls
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(default_lr, rel=1e-7)
    model = compile_model(linear_model(seed=0), name, learning_rate=0.25)
    assert float(model.optimizer.learning_rate.numpy()) == 0.25


def test_compile_model_accepts_an_optimizer_instance_and_loss():
    opt = keras.optimizers.SGD(learning_rate=0.3, momentum=0.9)
    model = compile_model(xor_model(seed=0), opt, loss="binary_crossentropy")
    assert model.optimizer is opt
    assert model.loss == "binary_crossentropy"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "muon"}, ValueError, r"`optimizer` must be one of \['sgd', 'adam', 'adamw', 'rmsprop'.*\]. Received: optimizer='muon'"),
        ({"optimizer": 3}, TypeError, "`optimizer` must be one of"),
        ({"learning_rate": 0}, ValueError, "`learning_rate` must be a positive finite number. Received: learning_rate=0"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate=nan"),
        ({"learning_rate": "fast"}, TypeError, "learning_rate='fast'"),
        ({"loss": "hinge_of_doom"}, ValueError, "`loss` must be a Keras loss name.*Received: loss='hinge_of_doom'"),
        ({"optimizer": keras.optimizers.SGD(), "learning_rate": 0.1}, ValueError, "must be None when `optimizer` is an Optimizer"),
    ],
    ids=["unknown-optimizer", "optimizer-type", "zero-lr", "nan-lr", "string-lr", "unknown-loss", "lr-with-instance"],
)
def test_compile_model_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        compile_model(linear_model(seed=0), **kwargs)


def test_compile_model_refuses_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        compile_model("model")


def test_dense_model_accepts_none_as_linear():
    # kerasbp.checks.check_layers documents None as an activation; Keras takes it as "linear".
    model = dense_model([2, 3, 1], None, seed=0)
    assert [layer.activation.__name__ for layer in model.layers] == ["linear", "linear"]
    model = dense_model([2, 3, 1], [None, "sigmoid"], seed=0)
    assert [layer.activation.__name__ for layer in model.layers] == ["linear", "sigmoid"]


def test_docstring_examples_run():
    results = doctest.testmod(kerasbp.models, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results


def test_factories_build_in_floatx_even_after_keras_fixed_its_policy():
    # Keras fixes its global dtype policy at the first layer built; set_floatx alone afterwards
    # used to give float32 kernels beside a float64 Input.
    keras.layers.Dense(1).build((None, 1))
    keras.config.set_floatx("float64")
    try:
        model = xor_model(seed=0)
        assert [w.dtype for w in model.get_weights()] == ["float64"] * 4
        assert model.inputs[0].dtype == "float64"
    finally:
        keras.config.set_floatx("float32")


def test_factories_keep_a_mixed_policy_the_user_set():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = xor_model(seed=0)
        assert [w.dtype for w in model.get_weights()] == ["float32"] * 4  # variables in float32
        assert all(layer.dtype_policy.name == "mixed_float16" for layer in model.layers)
    finally:
        keras.config.set_dtype_policy("float32")
