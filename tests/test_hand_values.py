"""Hand-worked steps 1 and 2 of each optimizer variant on a scalar, and BCE at its clip bounds.

Each value is worked out here in plain Python floats from Keras's update rule, written line by
line as in the Keras source (`keras/src/optimizers/adam.py`, `sgd.py`, `rmsprop.py`,
`update_step`; the rules are also in DESIGN.md), and written down as a number. The NumPy twin
(`kerasbp.reference.optimizers`) and Keras itself must give those numbers, and the twin must end
in the same state (moments, velocities, average gradients). Step 2 is where the variants differ:
AMSGrad keeps the larger second moment of step 1, Nesterov adds the new velocity once more,
centered RMSprop subtracts the squared mean gradient, and momentum carries step 1 into step 2.

The parameter starts at 0 and the gradients (1.0, then 0.25 or 0.01) are positive, so the values
are sums of same-signed increments with no cancellation. Tolerances:

- float64 with hyperparameters that are exact binary fractions (learning rate 0.125, betas 0.5
  and 0.75, ...): the same operations in the same order, so 1e-15 relative (a few ulps; `sqrt`
  and `pow` may round differently by one ulp).
- float32: each value passes through about a dozen float32 roundings (6e-8 relative each), so
  1e-6 relative (measured: at most 9e-8). Keras's defaults (0.9, 0.999, ...) are compared in
  float32 only: in float64, Keras rounds some of them to float32 first (DESIGN.md).

The same for the gradient of binary cross-entropy from probabilities at and around its clip
bounds `[1e-7, 1 - 1e-7]`, where the gradient passes on the bounds and stops strictly outside.

The twin is checked by the tests that import NumPy only; Keras by the tests at the end. The
optimizers are built inside the tests (not at import), so a test exercises their constructors.
"""

import warnings
from fractions import Fraction
from math import sqrt

import numpy as np
import pytest

from kerasbp.reference import get_loss, get_optimizer, optimizers, rounding
from kerasbp.reference.losses import BinaryCrossentropy, MeanSquaredError, binary_crossentropy, binary_crossentropy_gradient, mse, mse_gradient

GRADS = (1.0, 0.25)  # the gradients of steps 1 and 2
FLOAT32_RTOL = 1e-6
FLOAT64_RTOL = 1e-15


def float32(x):
    """`x` rounded to the nearest float32, as a Python float."""
    return float(np.float32(x))


def hand_adam(grads, lr, beta_1, beta_2, epsilon, amsgrad):
    """`keras/src/optimizers/adam.py` `update_step`, on a scalar starting at 0:

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)      t = iterations + 1
        m += (g - m) * (1 - beta_1)
        v += (g * g - v) * (1 - beta_2)
        v_hat = max(v_hat, v); use v_hat for v                   amsgrad only
        w -= m * alpha / (sqrt(v) + epsilon)

    In the bias correction Keras takes `ops.cast(beta, dtype)`, which rounds a Python float to
    float32 first, and in a float32 model `beta**t` is a float32 number too. `1 - beta_2**t`
    cancels: with beta_2 = 0.999 these roundings move it by up to 1.5e-5 of its value (the float32
    spacing near 1 is 6e-8, against 1 - 0.998 = 0.002), far more than the 1e-6 tolerance, so the
    hand values round the same way. Binary fractions such as 0.5 and 0.75 and their powers are
    unchanged by it, so the exact cases are also float64's values.

    Returns:
        `(values, state)`: the parameter after each step, and the final slots by the name of the
        twin's state field.
    """
    w, m, v, v_hat, values = 0.0, 0.0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        alpha = lr * sqrt(1 - float32(float32(beta_2) ** t)) / (1 - float32(float32(beta_1) ** t))
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        v_hat = max(v_hat, v)
        w = w - (m * alpha) / (sqrt(v_hat if amsgrad else v) + epsilon)
        values.append(w)
    return values, {"momentums": m, "velocities": v, **({"velocity_hats": v_hat} if amsgrad else {})}


def hand_sgd(grads, lr, momentum=0.0, nesterov=False):
    """`keras/src/optimizers/sgd.py` `update_step`:

        w -= g * lr                                 momentum == 0
        v = v * momentum - g * lr                   otherwise, then
        w += v                                      nesterov=False
        w += v * momentum - g * lr                  nesterov=True (the new v)
    """
    w, velocity, values = 0.0, 0.0, []
    for g in grads:
        if momentum == 0:
            w = w - g * lr
        else:
            velocity = velocity * momentum - g * lr
            w = w + ((velocity * momentum - g * lr) if nesterov else velocity)
        values.append(w)
    return values, ({"momentums": velocity} if momentum else {})


def hand_rmsprop(grads, lr, rho, momentum=0.0, epsilon=1e-7, centered=False):
    """`keras/src/optimizers/rmsprop.py` `update_step`:

        v = rho * v + (1 - rho) * g * g
        mg = rho * mg + (1 - rho) * g                          centered only
        increment = lr * g / sqrt(v - mg * mg + epsilon)       centered (epsilon inside the root)
        increment = lr * g / sqrt(v + epsilon)                 otherwise
        mom = momentum * mom + increment; w -= mom             momentum > 0
        w -= increment                                         otherwise
    """
    w, v, mg, mom, values = 0.0, 0.0, 0.0, 0.0, []
    for g in grads:
        v = rho * v + (1 - rho) * (g * g)
        if centered:
            mg = rho * mg + (1 - rho) * g
            increment = (lr * g) / sqrt(v - mg * mg + epsilon)
        else:
            increment = (lr * g) / sqrt(v + epsilon)
        if momentum > 0:
            mom = momentum * mom + increment
            w = w - mom
        else:
            w = w - increment
        values.append(w)
    state = {"velocities": v}
    if momentum > 0:
        state["momentums"] = mom
    if centered:
        state["average_gradients"] = mg
    return values, state


def case(name, class_name, kwargs, hand, written, grads=GRADS, exact=True):
    """One hand-worked case: the optimizer (the twin's and Keras's class have the same name and
    arguments), its hand values and final state, the same values written down as numbers, the
    gradients, and whether the hyperparameters are exact binary fractions (then float64 too)."""
    values, state = hand
    return pytest.param((class_name, kwargs, values, state, written, grads, exact), id=name)


CASES = [
    # step 1: w = -0.125; step 2: w = -0.125 - 0.25 * 0.125
    case("sgd", "SGD", {"learning_rate": 0.125}, hand_sgd(GRADS, 0.125), [-0.125, -0.15625]),
    # step 2: v = 0.5 * -0.125 - 0.03125 = -0.09375
    case("sgd-momentum", "SGD", {"learning_rate": 0.125, "momentum": 0.5}, hand_sgd(GRADS, 0.125, 0.5), [-0.125, -0.21875]),
    # step 1: v = -0.125, w = -0.0625 - 0.125; step 2: v = -0.0625 - 0.03125, w -= 0.046875 + 0.03125
    case("nesterov", "SGD", {"learning_rate": 0.125, "momentum": 0.5, "nesterov": True}, hand_sgd(GRADS, 0.125, 0.5, True), [-0.1875, -0.265625]),
    case("nesterov-momentum-0.9", "SGD", {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}, hand_sgd(GRADS, 0.01, 0.9, True), [-0.019000000000000003, -0.03185], exact=False),
    # step 1: alpha = 0.125 * sqrt(0.25) / 0.5 = 0.125, m = 0.5, v = 0.25: w = -0.0625 / (0.5 + 1e-7)
    # step 2: alpha = 0.125 * sqrt(0.4375) / 0.75, m = 0.375, v = 0.203125
    case("adam", "Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75}, hand_adam(GRADS, 0.125, 0.5, 0.75, 1e-7, False), [-0.12499997500000501, -0.21672487786124423]),
    # step 2: v = 0.203125 falls below step 1's 0.25, which AMSGrad keeps: sqrt(0.25) = 0.5
    case("amsgrad", "Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "amsgrad": True}, hand_adam(GRADS, 0.125, 0.5, 0.75, 1e-7, True), [-0.12499997500000501, -0.20767968693483108]),
    case("adam-keras-defaults", "Adam", {"learning_rate": 0.001}, hand_adam((1.0, 0.01), 0.001, 0.9, 0.999, 1e-7, False), [-0.0009999901620141069, -0.0016774506405880297], (1.0, 0.01), exact=False),
    case("amsgrad-keras-defaults", "Adam", {"learning_rate": 0.001, "amsgrad": True}, hand_adam((1.0, 0.01), 0.001, 0.9, 0.999, 1e-7, True), [-0.0009999901620141069, -0.001677145715713171], (1.0, 0.01), exact=False),
    # step 1: v = 0.5, increment = 0.125 / sqrt(0.5 + 1e-7); step 2: v = 0.28125
    case("rmsprop", "RMSprop", {"learning_rate": 0.125, "rho": 0.5}, hand_rmsprop(GRADS, 0.125, 0.5), [-0.17677667761897, -0.23570223224219575]),
    case("rmsprop-momentum", "RMSprop", {"learning_rate": 0.125, "rho": 0.5, "momentum": 0.5}, hand_rmsprop(GRADS, 0.125, 0.5, 0.5), [-0.17677667761897, -0.3240905710516807]),
    # step 1: v = 0.5, mg = 0.5, increment = 0.125 / sqrt(0.25 + 1e-7)
    # step 2: v = 0.28125, mg = 0.375, increment = 0.03125 / sqrt(0.140625 + 1e-7)
    case("centered-rmsprop", "RMSprop", {"learning_rate": 0.125, "rho": 0.5, "centered": True}, hand_rmsprop(GRADS, 0.125, 0.5, centered=True), [-0.24999995000001501, -0.3333332537037345]),
    # step 2 moves by half of step 1's increment more
    case("centered-rmsprop-momentum", "RMSprop", {"learning_rate": 0.125, "rho": 0.5, "momentum": 0.5, "centered": True}, hand_rmsprop(GRADS, 0.125, 0.5, 0.5, centered=True), [-0.24999995000001501, -0.45833322870374205]),
    case("centered-rmsprop-keras-defaults", "RMSprop", {"learning_rate": 0.001, "centered": True}, hand_rmsprop(GRADS, 0.001, 0.9, centered=True), [-0.003333331481483025, -0.00420096296946325], exact=False),
]
EXACT = [c for c in CASES if c.values[0][6]]


@pytest.mark.parametrize("spec", CASES)
def test_the_hand_values_are_the_numbers_written_down(spec):
    _, _, values, _, written, _, _ = spec
    np.testing.assert_allclose(values, written, rtol=FLOAT64_RTOL, atol=0)


def test_step_2_tells_each_variant_from_its_plain_form():
    # Each variant's step-2 value is far (relatively > 1e-4, against a float32 tolerance of 1e-6)
    # from the plain optimizer's, so a twin or Keras that ignored the variant fails below.
    by_id = {c.id: c.values[0][2] for c in CASES}
    plain = {
        "sgd-momentum": "sgd",
        "nesterov": "sgd-momentum",
        "amsgrad": "adam",
        "amsgrad-keras-defaults": "adam-keras-defaults",
        "rmsprop-momentum": "rmsprop",
        "centered-rmsprop": "rmsprop",
        "centered-rmsprop-momentum": "centered-rmsprop",
    }
    for variant, base in plain.items():
        assert abs(by_id[variant][1] / by_id[base][1] - 1) > 1e-4, variant


def twin_steps(class_name, kwargs, grads, dtype):
    """The twin's parameter after each step, and its final state."""
    twin = getattr(optimizers, class_name)(**kwargs)
    params, state = [np.zeros((), dtype)], twin.init([np.zeros((), dtype)])
    values = []
    for g in grads:
        params, state = twin.apply(params, [np.asarray(g, dtype)], state)
        assert params[0].dtype == dtype
        values.append(float(params[0]))
    assert state.iterations == len(grads)
    return values, state


def check_state(state, hand_state, dtype, rtol):
    """The twin's slots: exactly those of Keras's optimizer (by the hand rule's slots), in `dtype`,
    holding the hand values; the slots the variant does not use are empty."""
    for field in state._fields:
        if field == "iterations":
            continue
        slots = getattr(state, field)
        if field not in hand_state:
            assert slots == (), f"{field} should be empty"
            continue
        assert len(slots) == 1 and slots[0].dtype == dtype, field
        assert float(slots[0]) == pytest.approx(hand_state[field], rel=rtol, abs=0), field


@pytest.mark.parametrize("spec", CASES)
def test_twin_float32_gives_the_hand_values(spec):
    class_name, kwargs, _, hand_state, written, grads, _ = spec
    values, state = twin_steps(class_name, kwargs, grads, np.float32)
    np.testing.assert_allclose(values, written, rtol=FLOAT32_RTOL, atol=0)
    check_state(state, hand_state, np.float32, FLOAT32_RTOL)


@pytest.mark.parametrize("spec", EXACT)
def test_twin_float64_gives_the_hand_values(spec):
    class_name, kwargs, _, hand_state, written, grads, _ = spec
    values, state = twin_steps(class_name, kwargs, grads, np.float64)
    np.testing.assert_allclose(values, written, rtol=FLOAT64_RTOL, atol=0)
    check_state(state, hand_state, np.float64, FLOAT64_RTOL)


@pytest.mark.parametrize(
    "class_name, kwargs, field",
    [
        ("SGD", {"momentum": 0.5}, "momentums"),
        ("Adam", {}, "momentums"),
        ("Adam", {}, "velocities"),
        ("Adam", {"amsgrad": True}, "velocity_hats"),
        ("RMSprop", {}, "velocities"),
        ("RMSprop", {"momentum": 0.5}, "momentums"),
        ("RMSprop", {"centered": True}, "average_gradients"),
    ],
)
def test_a_state_with_a_slot_missing_is_refused_by_name(class_name, kwargs, field):
    twin = getattr(optimizers, class_name)(**kwargs)
    params = [np.zeros(2), np.zeros(3)]
    state = twin.init(params)
    broken = state._replace(**{field: getattr(state, field)[:1]})
    with pytest.raises(ValueError, match=rf"`state\.{field}` must hold one array per parameter \(2\)"):
        twin.apply(params, [np.ones(2), np.ones(3)], broken)
    for iterations in (1.5, True, -1):
        with pytest.raises(ValueError, match="`state.iterations` must be an integer >= 0"):
            twin.apply(params, [np.ones(2), np.ones(3)], state._replace(iterations=iterations))


@pytest.mark.parametrize(
    "class_name, kwargs, slots",
    [
        ("SGD", {}, {}),
        ("SGD", {"momentum": 0.5}, {"momentums"}),
        ("Adam", {}, {"momentums", "velocities"}),
        ("Adam", {"amsgrad": True}, {"momentums", "velocities", "velocity_hats"}),
        ("RMSprop", {}, {"velocities"}),
        ("RMSprop", {"momentum": 0.5, "centered": True}, {"velocities", "momentums", "average_gradients"}),
    ],
)
def test_initial_states_hold_zeros_in_kerass_slots_only(class_name, kwargs, slots):
    # Keras makes only the slot variables a variant uses (no momentums for SGD without momentum,
    # no velocity_hats without amsgrad, ...), all zero at the start.
    params = [np.ones((2, 3), np.float32), np.ones(3, np.float32)]
    state = getattr(optimizers, class_name)(**kwargs).init(params)
    assert state.iterations == 0
    for field in state._fields[1:]:
        value = getattr(state, field)
        if field in slots:
            assert [(a.shape, a.dtype) for a in value] == [((2, 3), np.float32), ((3,), np.float32)], field
            assert all(not a.any() for a in value), field
        else:
            assert value == (), field


@pytest.mark.parametrize(
    "class_name, name, value",
    [("SGD", "momentum", 1.0), ("Adam", "beta_1", 1.0), ("Adam", "beta_2", -0.1), ("Adam", "epsilon", -1.0), ("RMSprop", "rho", 1.5), ("RMSprop", "momentum", -0.5), ("RMSprop", "epsilon", -1.0)],
)
def test_hyperparameters_out_of_range_are_refused_by_name(class_name, name, value):
    with pytest.raises(ValueError, match=f"`{name}`"):
        getattr(optimizers, class_name)(**{name: value})


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="np.longdouble is float64 here: no wider type to round from")
def test_beta_powers_are_correctly_rounded_in_float64():
    # TensorFlow's scalar pow rounds correctly; the twin computes beta**t in a wider type and
    # rounds once. Exact reference: the power of the exact binary value, as a fraction, rounded.
    for beta in (0.9, 0.999, float32(0.9), float32(0.999)):
        wrong = [t for t in range(1, 1001) if rounding.scalar_power(beta, float(t), "float64") != float(Fraction(beta) ** t)]
        assert wrong == [], (beta, wrong[:5])


# ---------------------------------------------------------------- BCE at the clip bounds


def hand_bce_gradient(y, p, low, high):
    """dL/dp of one binary cross-entropy term from a probability (n = d = 1), as Keras's
    TensorFlow backend differentiates it (`keras/src/backend/tensorflow/nn.py`,
    `binary_crossentropy`: `p = clip_by_value(p, eps, 1 - eps)`, then `-(y log p + (1 - y) log(1 - p))`).
    `tf.clip_by_value` passes the gradient where `low <= p <= high`, bounds included, and gives 0
    strictly outside."""
    if p < low or p > high:
        return 0.0
    return (1 - y) / (1 - p) - y / p


def bce_points(dtype):
    """Probabilities at and around each clip bound, and 0 and 1, in `dtype`."""
    t = np.dtype(dtype).type
    low, high = t(1e-7), t(1) - t(1e-7)  # Keras: epsilon and `1.0 - epsilon` in the dtype
    points = [t(0), np.nextafter(low, t(0)), low, np.nextafter(low, t(1)), t(0.5), np.nextafter(high, t(0)), high, np.nextafter(high, t(1)), t(1)]
    return low, high, points


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twin_bce_gradient_at_the_clip_bounds(dtype):
    low, high, points = bce_points(dtype)
    for y in (0.0, 1.0):
        for p in points:
            want = hand_bce_gradient(y, float(p), float(low), float(high))
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no division by zero at p = 0 or 1 either
                got = binary_crossentropy_gradient(np.array([[y]], dtype), np.array([[p]], dtype))
            assert got.dtype == dtype
            # a division or two in the dtype: 4 ulps (exactly 0 outside the bounds)
            assert float(got[0, 0]) == pytest.approx(want, rel=4 * float(np.finfo(dtype).eps), abs=0), (y, p)
    assert hand_bce_gradient(0.0, float(low), float(low), float(high)) != 0  # the bound passes the gradient


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_by_hand_keep_the_dtype(dtype):
    # y = [1, 0], p = [0.25, 0.5]: BCE = (-log 0.25 - log 0.5) / 2 = 1.5 log 2; MSE = (0.5625 + 0.25) / 2.
    y, p = np.array([[1.0], [0.0]], dtype), np.array([[0.25], [0.5]], dtype)
    rtol = 4 * float(np.finfo(dtype).eps)
    for value, want in (
        (binary_crossentropy(y, p), 1.5 * np.log(2)),
        (get_loss("binary_crossentropy")(y, p), 1.5 * np.log(2)),  # probabilities by default
        (BinaryCrossentropy()(y, p), 1.5 * np.log(2)),
        (mse(y, p), 0.40625),
        # logits 0 and log 3: -log(sigmoid(0)) = log 2 and -log(1 - sigmoid(log 3)) = log 4
        (binary_crossentropy(y, np.array([[0.0], [np.log(3)]], dtype), from_logits=True), 1.5 * np.log(2)),
        (BinaryCrossentropy(from_logits=True)(y, np.array([[0.0], [np.log(3)]], dtype)), 1.5 * np.log(2)),
    ):
        assert value.dtype == dtype and float(value) == pytest.approx(want, rel=rtol)
    assert BinaryCrossentropy().from_logits is False
    assert float(MeanSquaredError()(y, p)) == 0.40625
    for gradient in (mse_gradient(y, p), MeanSquaredError().gradient(y, p)):  # 2 (p - y) / 2
        assert gradient.dtype == dtype and gradient.ravel().tolist() == [-0.75, 0.5]
    # dL/dp = ((1 - y) / (1 - p) - y / p) / 2: -1 / 0.25 / 2 and 1 / 0.5 / 2
    assert BinaryCrossentropy().gradient(y, p).ravel().tolist() == [-2.0, 1.0]
    # from logits: (sigmoid(z) - y) / 2 = (0.5 - 1) / 2 and (0.75 - 0) / 2
    logits_gradient = BinaryCrossentropy(from_logits=True).gradient(y, np.array([[0.0], [np.log(3)]], dtype)).ravel()
    np.testing.assert_allclose(logits_gradient, [-0.25, 0.375], rtol=rtol)
    with pytest.raises(TypeError, match="`from_logits` must be True or False"):
        binary_crossentropy_gradient(y, p, from_logits="yes")


# ---------------------------------------------------------------- Keras


def keras_steps(class_name, kwargs, grads, dtype):
    import keras  # here, so that the twin's tests above need NumPy only
    import tensorflow as tf

    optimizer = getattr(keras.optimizers, class_name)(**kwargs)
    variable = keras.Variable(np.zeros((), dtype))
    assert variable.dtype == dtype
    values = []
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g, dtype=dtype), variable)])
        values.append(float(variable.numpy()))
    return values


@pytest.mark.parametrize("spec", CASES)
def test_keras_float32_gives_the_hand_values(spec):
    class_name, kwargs, _, _, written, grads, _ = spec
    np.testing.assert_allclose(keras_steps(class_name, kwargs, grads, "float32"), written, rtol=FLOAT32_RTOL, atol=0)


@pytest.mark.parametrize("spec", EXACT)
def test_keras_float64_gives_the_hand_values(spec):
    class_name, kwargs, _, _, written, grads, _ = spec
    np.testing.assert_allclose(keras_steps(class_name, kwargs, grads, "float64"), written, rtol=FLOAT64_RTOL, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_bce_gradient_at_the_clip_bounds(dtype):
    import keras
    import tensorflow as tf

    low, high, points = bce_points(dtype)
    for y in (0.0, 1.0):
        for p in points:
            # a plain variable, not a sigmoid output: Keras takes the probability formula
            prediction = tf.Variable(np.array([[p]], dtype))
            with tf.GradientTape() as tape:
                loss = keras.losses.binary_crossentropy(tf.constant([[y]], dtype), prediction)
            got = float(tape.gradient(loss, prediction).numpy()[0, 0])
            want = hand_bce_gradient(y, float(p), float(low), float(high))
            assert got == pytest.approx(want, rel=4 * float(np.finfo(dtype).eps), abs=0), (y, p)


def test_keras_losses_and_optimizers_go_to_their_twins():
    import keras

    assert get_loss(keras.losses.mean_squared_error) == get_loss("mse")  # a Keras function
    assert get_loss(keras.losses.BinaryCrossentropy(from_logits=True)) == BinaryCrossentropy(from_logits=True)
    twin = get_optimizer(keras.optimizers.RMSprop(learning_rate=0.125, rho=0.5, centered=True))
    assert twin == optimizers.RMSprop(learning_rate=0.125, rho=0.5, centered=True)
