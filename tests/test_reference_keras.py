"""The NumPy twin against Keras 3 (TensorFlow backend): the same computation two ways.

Tolerances, stated once here and at each assertion:
- float32, one step from Keras's own weights and optimizer state (teacher-forced): loss and
  weights within 1e-6 relative. The gradients themselves differ by float32 rounding (TensorFlow
  sums in another order and its float32 sigmoid is a rational approximation), so exact equality
  is not expected; Keras's step and the twin's use the same formulas.
- The optimizers alone, fed identical gradients: within 2 ulps (bit-exact in practice, except
  the odd 1-ulp difference of `tf.pow` against `np.power` in Adam's bias correction).
- float64, free-running for 1000 steps: weights within 1e-9 and History losses within 1e-9
  relative (the measured gap is about 1e-15).
"""

import doctest
import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbp import compile_model, dense_model, linear_data, linear_model, train, xor_data, xor_model  # noqa: E402
from kerasbp.reference import (  # noqa: E402
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    SGD,
    Adam,
    BinaryCrossentropy,
    MeanSquaredError,
    NumpyMLP,
    RMSprop,
    binary_crossentropy,
    get_loss,
    loss_from_keras,
    optimizer_from_keras,
    state_from_keras,
)


def _set_float(dtype):
    # Keras caches its global dtype policy the first time a layer asks for it, so set_floatx
    # alone does not change the dtype of layers built afterwards: set the policy too.
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)


@pytest.fixture(autouse=True)
def _floatx_float32():
    _set_float("float32")
    yield
    _set_float("float32")


@pytest.fixture
def float64():
    """Run a test with floatx and the dtype policy float64; build models inside the test."""
    _set_float("float64")
    yield
    _set_float("float32")


def rel_close(actual, expected, rtol):
    """Assert `|actual - expected| <= rtol * max|expected|` for each array (relative to its scale)."""
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a, e = np.asarray(a, dtype="float64"), np.asarray(e, dtype="float64")
        assert a.shape == e.shape, (i, a.shape, e.shape)
        scale = np.max(np.abs(e))
        err = np.max(np.abs(a - e))
        assert err <= rtol * scale, f"array {i}: max |diff| {err:.3g} > {rtol} * {scale:.3g}"


# Keras's default hyperparameters, with the variants the issue names.
KERAS_OPTIMIZERS = [
    pytest.param(keras.optimizers.SGD, {}, id="sgd"),
    pytest.param(keras.optimizers.SGD, {"momentum": 0.9}, id="sgd-momentum"),
    pytest.param(keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}, id="nesterov"),
    pytest.param(keras.optimizers.Adam, {}, id="adam"),
    pytest.param(keras.optimizers.Adam, {"amsgrad": True}, id="adam-amsgrad"),
    pytest.param(keras.optimizers.RMSprop, {}, id="rmsprop"),
    pytest.param(keras.optimizers.RMSprop, {"momentum": 0.9, "centered": True}, id="rmsprop-centered-momentum"),
]

PROBLEMS = [
    pytest.param("xor", "mse", id="xor-mse"),
    pytest.param("xor", "binary_crossentropy", id="xor-bce"),
    pytest.param("linear", "mse", id="linear-mse"),
]


def _problem(name):
    if name == "xor":
        X, y = xor_data()
        return xor_model(seed=1), X, y
    X, y = linear_data()  # float64; Keras and the twin both cast to float32
    return linear_model(seed=1), X, y


# ---------------------------------------------------------------- registries and docstrings


def test_registries_name_the_keras_classes_functions_and_slots():
    every_slot = {"sgd": {"momentum": 0.9}, "adam": {"amsgrad": True}, "adamw": {"amsgrad": True}, "rmsprop": {"momentum": 0.9, "centered": True}}
    for name, spec in OPTIMIZERS.items():
        cls = getattr(keras.optimizers, spec.keras_class)
        if name not in ("lamb",):  # Keras 3.15 has no string identifier for Lamb
            assert keras.optimizers.get(name).__class__ is cls  # compile(optimizer=name) makes this class
        keras_opt = cls(**every_slot.get(name, {}))
        keras_opt.build([keras.Variable(np.zeros(2, "float32"))])
        for slot, attribute in spec.keras_slots.items():
            value = getattr(keras_opt, attribute)
            assert isinstance(value, keras.Variable) or len(value) == 1, (name, slot)
        # the twin's defaults are Keras's (the learning rate as Keras stores it, float32)
        keras_config = cls().get_config()
        for key, value in spec.twin().get_config().items():
            assert keras_config[key] == pytest.approx(value, rel=1e-7), (name, key)
    for name, spec in LOSSES.items():
        function = getattr(keras.losses, spec.name)
        assert all(keras.losses.get(alias) is function for alias in (name, *spec.aliases))
        assert type(getattr(keras.losses, spec.keras_class)()).__name__ == spec.keras_class
        assert loss_from_keras(function) == spec.twin()
    for name in ACTIVATIONS:
        if name != "gelu_approximate":  # the twin's name for gelu(approximate=True)
            assert keras.activations.get(name).__name__ == name


@pytest.mark.parametrize("module", ["kerasbp.reference", "kerasbp.reference.mlp", "kerasbp.reference.from_keras"])
def test_docstring_examples_that_use_keras_run(module):
    results = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results


# ---------------------------------------------------------------- from_keras


def test_from_keras_copies_architecture_and_weights():
    model = dense_model([3, 5, 4, 2], ["relu", "tanh", "linear"], seed=0)
    mlp = NumpyMLP.from_keras(model)
    assert mlp.layer_sizes == [3, 5, 4, 2]
    assert mlp.activations == ["relu", "tanh", "linear"]
    assert mlp.dtype == "float32"
    assert [p.shape for p in mlp.params] == [tuple(w.shape) for w in model.trainable_weights]
    for p, w in zip(mlp.params, model.get_weights(), strict=True):
        np.testing.assert_array_equal(p, w)
    X = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    # forward pass: same formula, float32 rounding only (tolerance 1e-5 relative to the output scale)
    rel_close([mlp.forward(X)], [model.predict(X, verbose=0)], 1e-5)


def test_from_keras_supports_use_bias_false():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh", use_bias=False), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    mlp = NumpyMLP.from_keras(model)
    assert mlp.param_shapes == [(2, 3), (3, 1), (1,)]
    X, y = xor_data()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(X, y, model(X, training=True))
    keras_grads = tape.gradient(loss, model.trainable_weights)
    twin_loss, grads = mlp.gradients(X, y)
    assert float(twin_loss) == pytest.approx(float(loss), rel=1e-6)
    rel_close(grads, [g.numpy() for g in keras_grads], 1e-5)


def test_from_keras_refuses_what_it_cannot_copy():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        NumpyMLP.from_keras("model")
    inputs = keras.Input((2,))
    functional = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match=r"supports keras.Sequential models of Dense layers. Received a model of class Functional"):
        NumpyMLP.from_keras(functional)
    with_noise = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.GaussianNoise(0.5, name="noise")])
    with pytest.raises(ValueError, match=r"Dense, BatchNormalization, Dropout and Activation layers. Unsupported layer 'noise' of class GaussianNoise"):
        NumpyMLP.from_keras(with_noise)
    hard = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="hard_sigmoid", name="out")])
    with pytest.raises(ValueError, match=r"Unsupported activation 'hard_sigmoid' in layer 'out'"):
        NumpyMLP.from_keras(hard)
    orthogonal = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(), name="reg")])
    with pytest.raises(ValueError, match=r"supports the regularizers L1, L2 and L1L2. Unsupported in layer 'reg'"):
        NumpyMLP.from_keras(orthogonal)
    activity = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activity_regularizer="l2", name="act")])
    with pytest.raises(ValueError, match=r"does not support `activity_regularizer`. Unsupported in layer 'act'"):
        NumpyMLP.from_keras(activity)
    constrained = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, bias_constraint="non_neg", name="c")])
    with pytest.raises(ValueError, match=r"does not support `bias_constraint`. Unsupported in layer 'c'"):
        NumpyMLP.from_keras(constrained)
    frozen = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="frozen")])
    frozen.layers[0].trainable = False
    with pytest.raises(ValueError, match=r"Unsupported in layer 'frozen': trainable=False"):
        NumpyMLP.from_keras(frozen)
    mixed = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, dtype="mixed_float16", name="half")])
    with pytest.raises(ValueError, match=r"does not support mixed precision. Unsupported dtype policy in layer 'half'"):
        NumpyMLP.from_keras(mixed)
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"`model` must be built"):
        NumpyMLP.from_keras(unbuilt)


# ---------------------------------------------------------------- losses from Keras


def test_loss_from_keras():
    assert loss_from_keras("mse") == MeanSquaredError()
    assert loss_from_keras(keras.losses.MeanSquaredError()) == MeanSquaredError()
    assert loss_from_keras(keras.losses.binary_crossentropy) == BinaryCrossentropy()
    assert get_loss(keras.losses.BinaryCrossentropy(from_logits=True)) == BinaryCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"supports the Keras losses MeanSquaredError and MeanAbsoluteError.*Received: loss=<LossFunctionWrapper"):
        loss_from_keras(keras.losses.Hinge())
    with pytest.raises(ValueError, match=r"reduction='sum_over_batch_size' only. Received: reduction='sum'"):
        loss_from_keras(keras.losses.MeanSquaredError(reduction="sum"))
    with pytest.raises(ValueError, match=r"label smoothing. Received: label_smoothing=0.1"):
        loss_from_keras(keras.losses.BinaryCrossentropy(label_smoothing=0.1))


# ---------------------------------------------------------------- optimizers from Keras


def test_optimizer_from_keras_reads_config_and_stored_learning_rate():
    twin = optimizer_from_keras(keras.optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True))
    assert isinstance(twin, RMSprop)
    assert twin.learning_rate == float(np.float32(0.01))  # stored as a float32 variable
    assert (twin.rho, twin.momentum, twin.centered) == (0.8, 0.5, True)
    assert optimizer_from_keras(keras.optimizers.SGD(momentum=0.9, nesterov=True)) == SGD(
        learning_rate=float(np.float32(0.01)), momentum=0.9, nesterov=True
    )
    assert optimizer_from_keras(keras.optimizers.Adam(amsgrad=True)).amsgrad is True


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda: keras.optimizers.SGD(loss_scale_factor=2.0), r"`loss_scale_factor`", id="loss_scale_factor"),
        pytest.param(lambda: keras.optimizers.Muon(), r"does not twin the Keras optimizer Muon: its update orthogonalizes", id="muon"),
        pytest.param(lambda: keras.optimizers.SGD(lambda: 0.1), r"not a callable", id="callable-lr"),
    ],
)
def test_optimizer_from_keras_refuses_unsupported_options(make, match):
    with pytest.raises(ValueError, match=match):
        optimizer_from_keras(make())


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: keras.optimizers.SGD(clipnorm=1.0), id="clipnorm"),
        pytest.param(lambda: keras.optimizers.Adam(clipvalue=0.5), id="clipvalue"),
        pytest.param(lambda: keras.optimizers.RMSprop(global_clipnorm=1.0), id="global_clipnorm"),
        pytest.param(lambda: keras.optimizers.SGD(weight_decay=0.01), id="weight_decay"),
        pytest.param(lambda: keras.optimizers.Adam(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3), id="use_ema"),
        pytest.param(lambda: keras.optimizers.Adam(gradient_accumulation_steps=2), id="grad_accum"),
        pytest.param(lambda: keras.optimizers.AdamW(), id="adamw"),
        pytest.param(lambda: keras.optimizers.Adagrad(), id="adagrad"),
        pytest.param(lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)), id="schedule"),
    ],
)
def test_optimizer_from_keras_copies_the_common_options(make):
    keras_opt = make()
    twin = optimizer_from_keras(keras_opt)
    config = keras_opt.get_config()
    for key, value in twin.get_config().items():
        if key != "learning_rate":
            assert config[key] == pytest.approx(value), key


def test_optimizer_from_keras_and_state_from_keras_bad_input():
    with pytest.raises(TypeError, match=r"`keras_optimizer` must be a keras.optimizers.Optimizer"):
        optimizer_from_keras("adam")
    unbuilt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match=r"has not been built yet .* pass `params`"):
        state_from_keras(unbuilt)
    state = state_from_keras(unbuilt, params=[np.zeros(2, "float32")])
    assert state.iterations == 0 and state.momentums[0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"`twin` must be a Adam to take the state of a Keras Adam"):
        state_from_keras(unbuilt, SGD(), params=[np.zeros(2)])
    with pytest.raises(ValueError, match=r"`twin` must keep the same state slots"):
        state_from_keras(unbuilt, Adam(amsgrad=True), params=[np.zeros(2)])


# ---------------------------------------------------------------- optimizers alone, same gradients


def assert_ulps(actual, expected, previous, maxulp):
    """`|actual - expected| <= maxulp` ulps of `max(|expected|, |previous|)`, elementwise.

    Measured against the larger of the old and new values, so that a one-ulp difference in an
    update that brings a value close to zero is not counted as many ulps of the small result.
    """
    scale = np.maximum(np.abs(expected), np.abs(previous))
    limit = maxulp * np.spacing(scale.astype(np.asarray(expected).dtype))
    assert np.all(np.abs(actual - expected) <= limit), np.max(np.abs(actual - expected) / np.spacing(scale))


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=["float32", "float64"])
@pytest.mark.parametrize(("keras_cls", "kwargs"), KERAS_OPTIMIZERS)
def test_optimizer_matches_keras_given_the_same_gradients(keras_cls, kwargs, dtype):
    """50 steps from Keras's values and state each time, identical gradients: within 2 ulps."""
    _set_float(dtype)  # restored by the autouse fixture
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=(2,)).astype(dtype)]
    variables = [keras.Variable(p) for p in init]
    keras_opt = keras_cls(learning_rate=0.05, **kwargs) if keras_cls is not keras.optimizers.SGD else keras_cls(**kwargs)
    twin = optimizer_from_keras(keras_opt)
    for step in range(50):
        params = [v.numpy() for v in variables]
        state = state_from_keras(keras_opt, twin, params=params)
        # gradients over 9 orders of magnitude, so epsilon and the roundings matter
        grads = [(rng.normal(size=p.shape) * 10.0 ** rng.integers(-7, 2, size=p.shape)).astype(dtype) for p in init]
        keras_opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        new_params, new_state = twin.apply(params, grads, state)
        for p, v, old in zip(new_params, variables, params, strict=True):
            assert p.dtype == np.dtype(dtype)
            assert_ulps(p, v.numpy(), old, maxulp=2)
        keras_state = state_from_keras(keras_opt, twin)
        assert keras_state.iterations == new_state.iterations == step + 1
        for ours, theirs, before in zip(new_state[1:], keras_state[1:], state[1:], strict=True):
            for a, b, c in zip(ours, theirs, before, strict=True):
                assert_ulps(a, b, c, maxulp=2)


def test_float64_optimizer_made_under_float32_keeps_a_float32_learning_rate():
    # Learning rate stored as float32 (floatx at creation), variables in float64: the twin built
    # with optimizer_from_keras reads the stored value, so it stays exact (2 ulps).
    keras_opt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    variable = keras.Variable(np.ones(3), dtype="float64")
    twin = optimizer_from_keras(keras_opt)
    assert twin.learning_rate == float(np.float32(0.1)) != 0.1
    params, state = [np.ones(3)], twin.init([np.ones(3)])
    for g in ([0.5, -1.0, 2.0], [1e-3, 3.0, -0.25]):
        keras_opt.apply_gradients([(tf.constant(g, dtype="float64"), variable)])
        params, state = twin.apply(params, [np.array(g)], state)
    np.testing.assert_array_max_ulp(params[0], variable.numpy(), maxulp=2)


# ---------------------------------------------------------------- teacher-forced, float32


@pytest.mark.parametrize(("problem", "loss"), PROBLEMS)
@pytest.mark.parametrize(("keras_cls", "kwargs"), KERAS_OPTIMIZERS)
def test_teacher_forced_step_matches_keras_float32(keras_cls, kwargs, problem, loss):
    """50 consecutive steps; before each, the twin takes Keras's weights and optimizer state."""
    model, X, y = _problem(problem)
    compile_model(model, keras_cls(**kwargs), loss=loss)
    for step in range(50):
        mlp = NumpyMLP.from_keras(model)
        twin = optimizer_from_keras(model.optimizer)
        state = state_from_keras(model.optimizer, twin, params=mlp.params)  # fresh at step 0
        assert state.iterations == step
        twin_loss, twin_state = mlp.train_step(X, y, twin, state, loss=loss)
        keras_loss = model.train_on_batch(X, y)  # the loss before the update, as the twin's
        assert float(twin_loss) == pytest.approx(keras_loss, rel=1e-6), f"step {step}"
        rel_close(mlp.params, model.get_weights(), 1e-6)
        assert twin_state.iterations == int(model.optimizer.iterations.numpy()) == step + 1


# ---------------------------------------------------------------- free-running, float64

# Learning rates at which XOR trains but stays well-conditioned: RMSprop at 0.01 is chaotic on
# XOR (see test_rmsprop_at_lr_0_01_amplifies_rounding_on_xor), so it runs at its default 0.001.
FREE_RUNNING = [
    pytest.param("sgd", 0.5, id="sgd"),
    pytest.param("adam", 0.01, id="adam"),
    pytest.param("rmsprop", 0.001, id="rmsprop"),
]


def test_rmsprop_at_lr_0_01_amplifies_rounding_on_xor():
    """Why the free-running RMSprop test uses lr 0.001: at 0.01, NumPy alone, a relative change of
    1e-15 in one kernel grows past 1e-6 within 1000 steps, so no two implementations that round
    differently can agree to 1e-9 there; at 0.001 the same change stays below 1e-12."""
    X, y = xor_data("float64")
    base = NumpyMLP.from_sizes([2, 4, 1], "sigmoid", seed=0, dtype="float64")
    for lr, low, high in [(0.01, 1e-6, np.inf), (0.001, 0, 1e-12)]:
        a, b = base.copy(), base.copy()
        params = b.params
        params[0] = params[0] * (1 + 1e-15)
        b.set_params(params)
        a.fit(X, y, RMSprop(learning_rate=lr), epochs=1000, batch_size=4)
        b.fit(X, y, RMSprop(learning_rate=lr), epochs=1000, batch_size=4)
        gap = max(np.max(np.abs(p - q)) for p, q in zip(a.params, b.params, strict=True))
        assert low <= gap < high, (lr, gap)


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"], ids=["mse", "bce"])
@pytest.mark.parametrize(("optimizer", "lr"), FREE_RUNNING)
def test_free_running_1000_steps_float64(float64, optimizer, lr, loss):
    X, y = xor_data("float64")
    model = compile_model(xor_model(seed=0), optimizer, learning_rate=lr, loss=loss)
    assert model.weights[0].dtype == "float64"
    mlp = NumpyMLP.from_keras(model)
    assert mlp.dtype == "float64"
    twin = optimizer_from_keras(model.optimizer)
    assert twin.learning_rate == lr  # a float64 variable under floatx float64: no rounding
    # kerasbp.train runs the model's own train_step like fit(shuffle=False); see the next test
    # for model.fit itself.
    history = train(model, X, y, epochs=1000, batch_size=4)
    losses = mlp.fit(X, y, twin, epochs=1000, batch_size=4, loss=loss)
    keras_losses = np.array(history.history["loss"])
    assert keras_losses[-1] < 0.9 * keras_losses[0]  # it did train: a real trajectory
    np.testing.assert_allclose(losses, keras_losses, rtol=1e-9, atol=0)
    for p, w in zip(mlp.params, model.get_weights(), strict=True):
        np.testing.assert_allclose(p, w, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("optimizer", "lr"), FREE_RUNNING)
def test_fit_matches_keras_fit_with_partial_batches_float64(float64, optimizer, lr):
    """model.fit itself, batch_size None (32) on 100 samples: batches of 32, 32, 32 and 4."""
    X, y = linear_data(n_samples=100)
    model = compile_model(linear_model(seed=0), optimizer, learning_rate=lr)
    mlp = NumpyMLP.from_keras(model)
    history = model.fit(X, y, epochs=4, shuffle=False, verbose=0)
    losses = mlp.fit(X, y, optimizer_from_keras(model.optimizer), epochs=4)
    assert mlp.optimizer_state.iterations == 16 == int(model.optimizer.iterations.numpy())
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-12, atol=0)
    for p, w in zip(mlp.params, model.get_weights(), strict=True):
        np.testing.assert_allclose(p, w, rtol=0, atol=1e-12)


def test_fit_matches_keras_fit_float32():
    """Free-running in float32 (20 epochs, batches of 32, 32, 32, 4): 1e-5 relative."""
    X, y = linear_data(n_samples=100)
    model = compile_model(linear_model(seed=0), "adam", learning_rate=0.05)
    mlp = NumpyMLP.from_keras(model)
    history = model.fit(X, y, epochs=20, shuffle=False, verbose=0)
    losses = mlp.fit(X, y, optimizer_from_keras(model.optimizer), epochs=20)
    assert losses.dtype == np.float32
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-5)
    rel_close(mlp.params, model.get_weights(), 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "lr"), FREE_RUNNING)
def test_free_running_1000_epochs_of_model_fit_float64(float64, optimizer, lr):
    """The same as the kerasbp.train test above with model.fit itself (about 50 s each)."""
    X, y = xor_data("float64")
    model = compile_model(xor_model(seed=0), optimizer, learning_rate=lr, loss="mse")
    mlp = NumpyMLP.from_keras(model)
    history = model.fit(X, y, epochs=1000, batch_size=4, shuffle=False, verbose=0)
    losses = mlp.fit(X, y, optimizer_from_keras(model.optimizer), epochs=1000, batch_size=4)
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-9, atol=0)
    for p, w in zip(mlp.params, model.get_weights(), strict=True):
        np.testing.assert_allclose(p, w, rtol=0, atol=1e-9)


def test_float64_adam_step_needs_float32_rounded_betas(float64):
    """One Adam step in float64: the twin is exact; Python-float betas would be 6.6e-6 off."""
    variable = keras.Variable(np.zeros(1))
    keras_opt = keras.optimizers.Adam(learning_rate=0.1)
    keras_opt.apply_gradients([(tf.constant([1.0], dtype="float64"), variable)])
    twin = optimizer_from_keras(keras_opt)
    params, _ = twin.apply([np.zeros(1)], [np.ones(1)], twin.init([np.zeros(1)]))
    keras_step = variable.numpy()[0]
    assert params[0][0] == pytest.approx(keras_step, rel=1e-15)
    unrounded = -(0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)) * (1 - 0.9) / (np.sqrt(1 - 0.999) + 1e-7)
    assert abs(unrounded / keras_step - 1) > 6e-6


# ---------------------------------------------------------------- known values, twin and Keras


def _keras_steps(keras_opt, grad, n_steps, dtype="float32"):
    variable = keras.Variable(np.zeros(1, dtype=dtype))
    values = []
    for _ in range(n_steps):
        keras_opt.apply_gradients([(tf.constant([grad], dtype=dtype), variable)])
        values.append(float(variable.numpy()[0]))
    return values


def _twin_steps(twin, grad, n_steps, dtype="float32"):
    params, state = [np.zeros(1, dtype)], twin.init([np.zeros(1, dtype)])
    values = []
    for _ in range(n_steps):
        params, state = twin.apply(params, [np.full(1, grad, dtype)], state)
        values.append(float(params[0][0]))
    return values


def test_known_value_adam_tiny_gradient_moves_2_4025e_4():
    keras_moved = -_keras_steps(keras.optimizers.Adam(learning_rate=1e-3), 1e-6, 1)[0]
    twin_moved = -_twin_steps(Adam(learning_rate=1e-3), 1e-6, 1)[0]
    assert keras_moved == pytest.approx(2.4025e-4, rel=1e-4)  # 5 significant digits
    assert twin_moved == pytest.approx(keras_moved, rel=1e-6)
    textbook = 1e-3 * 1e-6 / (np.sqrt(1e-12) + 1e-7)  # Kingma & Ba Algorithm 1, same epsilon
    assert textbook == pytest.approx(9.09e-4, rel=1e-3)


def test_known_value_rmsprop_tiny_gradient_moves_3_1466e_3():
    keras_moved = -_keras_steps(keras.optimizers.RMSprop(learning_rate=0.01), 1e-4, 1)[0]
    twin_moved = -_twin_steps(RMSprop(learning_rate=0.01), 1e-4, 1)[0]
    assert keras_moved == pytest.approx(3.1466e-3, rel=1e-4)
    assert twin_moved == pytest.approx(keras_moved, rel=1e-6)
    epsilon_outside = 0.01 * 1e-4 / (np.sqrt(0.1 * 1e-8) + 1e-7)
    assert epsilon_outside == pytest.approx(3.15e-2, rel=1e-3)


def test_known_value_sgd_momentum_three_steps():
    expected = [-0.1, -0.29, -0.561]
    keras_values = _keras_steps(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9), 1.0, 3)
    twin_values = _twin_steps(SGD(learning_rate=0.1, momentum=0.9), 1.0, 3)
    np.testing.assert_allclose(keras_values, expected, rtol=1e-6)
    np.testing.assert_allclose(twin_values, keras_values, rtol=1e-6)


def test_known_value_bce_saturated_sigmoid_loss_is_20():
    model = dense_model([1, 1], "sigmoid")
    model.set_weights([np.zeros((1, 1), "float32"), np.array([-20.0], "float32")])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    X, y = np.ones((1, 1), "float32"), np.ones((1, 1), "float32")
    keras_loss = model.evaluate(X, y, verbose=0)
    mlp = NumpyMLP.from_keras(model)
    twin_loss, twin_grads = mlp.gradients(X, y, "binary_crossentropy")
    assert keras_loss == pytest.approx(20.0, rel=1e-6)
    assert float(twin_loss) == pytest.approx(keras_loss, rel=1e-6)
    # Keras's gradient is the logits one, (sigmoid(z) - y) / n = -1, not the clipped zero
    with tf.GradientTape() as tape:
        loss = model.compute_loss(X, y, model(X, training=True))
    keras_grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    assert keras_grads[1].item() == pytest.approx(-1.0, rel=1e-6)
    rel_close(twin_grads, keras_grads, 1e-6)
    # clipped probabilities, the formula Keras uses when it has no logits: -log(1e-7) = 16.118
    p = keras.ops.convert_to_numpy(keras.ops.sigmoid(np.array([[-20.0]], "float32")))
    keras_clipped = float(keras.losses.binary_crossentropy(y, p).numpy()[0])
    assert keras_clipped == pytest.approx(16.118, abs=5e-4)
    assert float(binary_crossentropy(y, p)) == pytest.approx(keras_clipped, rel=1e-6)


# ---------------------------------------------------------------- the seed notebook


def sigmoid_seed(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative_seed(x):
    return x * (1 - x)


class SeedNetwork:
    """The seed notebook's NeuralNetwork, verbatim except for its initial weights (given) and the
    optional hidden-bias update that the notebook forgot."""

    def __init__(self, W1, b1, W2, b2, fix_hidden_bias):
        self.weights_input_hidden = W1.copy()
        self.weights_hidden_output = W2.copy()
        self.bias_hidden = b1.reshape(1, -1).copy()
        self.bias_output = b2.reshape(1, -1).copy()
        self.fix_hidden_bias = fix_hidden_bias

    def feedforward(self, inputs):
        self.hidden_sum = np.dot(inputs, self.weights_input_hidden) + self.bias_hidden
        self.hidden_activation = sigmoid_seed(self.hidden_sum)
        self.output_sum = np.dot(self.hidden_activation, self.weights_hidden_output) + self.bias_output
        self.final_output = sigmoid_seed(self.output_sum)
        return self.final_output

    def backward(self, inputs, targets, learning_rate):
        output_error = targets - self.final_output
        d_output = output_error * sigmoid_derivative_seed(self.final_output)
        hidden_error = np.dot(d_output, self.weights_hidden_output.T)
        d_hidden = hidden_error * sigmoid_derivative_seed(self.hidden_activation)
        self.weights_hidden_output += np.dot(self.hidden_activation.T, d_output) * learning_rate
        self.bias_output += np.sum(d_output, axis=0, keepdims=True) * learning_rate
        self.weights_input_hidden += np.dot(inputs.T, d_hidden) * learning_rate
        if self.fix_hidden_bias:  # missing in the notebook
            self.bias_hidden += np.sum(d_hidden, axis=0, keepdims=True) * learning_rate

    def weights(self):
        return [
            self.weights_input_hidden,
            self.bias_hidden.ravel(),
            self.weights_hidden_output,
            self.bias_output.ravel(),
        ]


def test_seed_network_is_keras_sgd_on_mse_with_rescaled_learning_rate(float64):
    """The seed's update is w += lr_seed * a^T (d * sigmoid'(out)) with d = targets - output.

    Keras's MSE gradient is dL/dyhat = 2 / (n * d) * (yhat - y), so Keras SGD moves by
    -lr_keras * 2 / (n * d) * a^T ((yhat - y) * sigmoid'(out)) = lr_keras * 2 / n * a^T (d *
    sigmoid'(out)) for d = 1 output. Hence lr_seed = lr_keras * 2 / n: with n = 4 samples, the
    seed's learning rate 0.1 is Keras SGD with learning_rate 0.2. That holds once the seed's
    missing hidden-bias update is restored.
    """
    n, lr_seed = 4, 0.1
    lr_keras = lr_seed * n / 2
    X, y = xor_data("float64")
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=lr_keras, loss="mse")
    initial = model.get_weights()
    mlp = NumpyMLP.from_keras(model)

    # One step: the seed's d_output and d_hidden are the twin's deltas times -n / 2.
    seed = SeedNetwork(*initial, fix_hidden_bias=True)
    seed.feedforward(X)
    deltas = mlp.deltas(X, y, "mse")
    d_output = (y - seed.final_output) * sigmoid_derivative_seed(seed.final_output)
    d_hidden = np.dot(d_output, seed.weights_hidden_output.T) * sigmoid_derivative_seed(seed.hidden_activation)
    np.testing.assert_allclose(deltas[1], -2 / n * d_output, rtol=1e-13)  # same terms, float64
    np.testing.assert_allclose(deltas[0], -2 / n * d_hidden, rtol=1e-13)

    # 500 full-batch steps: seed (fixed) == twin SGD(0.2) == Keras SGD(0.2), to 1e-12 in float64
    seed = SeedNetwork(*initial, fix_hidden_bias=True)
    for _ in range(500):
        seed.feedforward(X)
        seed.backward(X, y, lr_seed)
    mlp.fit(X, y, SGD(learning_rate=lr_keras), epochs=500, batch_size=4)
    train(model, X, y, epochs=500, batch_size=4)
    for s, p, w in zip(seed.weights(), mlp.params, model.get_weights(), strict=True):
        np.testing.assert_allclose(s, p, rtol=0, atol=1e-12)
        np.testing.assert_allclose(p, w, rtol=0, atol=1e-12)
    assert np.max(np.abs(seed.weights()[0] - initial[0])) > 1e-2  # the weights did move

    # The notebook as written: its hidden bias never moves, and it drifts away from Keras.
    broken = SeedNetwork(*initial, fix_hidden_bias=False)
    for _ in range(500):
        broken.feedforward(X)
        broken.backward(X, y, lr_seed)
    np.testing.assert_array_equal(broken.bias_hidden.ravel(), initial[1])
    assert np.max(np.abs(model.get_weights()[1] - initial[1])) > 1e-3
    assert np.max(np.abs(broken.weights()[0] - model.get_weights()[0])) > 1e-4
