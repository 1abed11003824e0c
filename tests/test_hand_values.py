"""Hand-worked steps 1 and 2 of Adam, AMSGrad, Nesterov momentum and centered RMSprop on a scalar.

Each value is worked out here in plain Python floats from Keras's update rule, written line by
line as in the Keras source (`keras/src/optimizers/adam.py`, `sgd.py`, `rmsprop.py`,
`update_step`; the rules are also in DESIGN.md), and written down as a number. The NumPy twin
(`kerasbp.reference.optimizers`) and Keras itself must give those numbers. Step 2 is where the
variants differ: AMSGrad keeps the larger second moment of step 1, Nesterov adds the new velocity
once more, centered RMSprop subtracts the squared mean gradient, and momentum carries step 1's
increment into step 2.

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

The twin is checked by the tests that import NumPy only; Keras by the tests at the end.
"""

from math import sqrt

import numpy as np
import pytest

from kerasbp.reference.optimizers import SGD, Adam, RMSprop

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
    """
    w, m, v, v_hat, values = 0.0, 0.0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        alpha = lr * sqrt(1 - float32(float32(beta_2) ** t)) / (1 - float32(float32(beta_1) ** t))
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        v_hat = max(v_hat, v)
        w = w - (m * alpha) / (sqrt(v_hat if amsgrad else v) + epsilon)
        values.append(w)
    return values


def hand_nesterov(grads, lr, momentum):
    """`keras/src/optimizers/sgd.py` `update_step` with `nesterov=True`:

        v = v * momentum - g * lr
        w += v * momentum - g * lr          (the new v)
    """
    w, velocity, values = 0.0, 0.0, []
    for g in grads:
        velocity = velocity * momentum - g * lr
        w = w + (velocity * momentum - g * lr)
        values.append(w)
    return values


def hand_centered_rmsprop(grads, lr, rho, momentum, epsilon):
    """`keras/src/optimizers/rmsprop.py` `update_step` with `centered=True`:

        v = rho * v + (1 - rho) * g * g
        mg = rho * mg + (1 - rho) * g
        increment = lr * g / sqrt(v - mg * mg + epsilon)      epsilon inside the root
        mom = momentum * mom + increment; w -= mom             momentum > 0
        w -= increment                                         otherwise
    """
    w, v, mg, mom, values = 0.0, 0.0, 0.0, 0.0, []
    for g in grads:
        v = rho * v + (1 - rho) * (g * g)
        mg = rho * mg + (1 - rho) * g
        increment = (lr * g) / sqrt(v - mg * mg + epsilon)
        if momentum > 0:
            mom = momentum * mom + increment
            w = w - mom
        else:
            w = w - increment
        values.append(w)
    return values


# id, the twin, the Keras class name and keyword arguments, the hand values, the same numbers
# written down, the gradients, and whether the hyperparameters are exact binary fractions.
CASES = [
    (
        "adam",
        Adam(0.125, beta_1=0.5, beta_2=0.75),
        ("Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75}),
        hand_adam(GRADS, 0.125, 0.5, 0.75, 1e-7, amsgrad=False),
        # step 1: alpha = 0.125 * sqrt(0.25) / 0.5 = 0.125, m = 0.5, v = 0.25: w = -0.0625 / (0.5 + 1e-7)
        # step 2: alpha = 0.125 * sqrt(0.4375) / 0.75, m = 0.375, v = 0.203125
        [-0.12499997500000501, -0.21672487786124423],
        GRADS,
        True,
    ),
    (
        "amsgrad",
        Adam(0.125, beta_1=0.5, beta_2=0.75, amsgrad=True),
        ("Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "amsgrad": True}),
        hand_adam(GRADS, 0.125, 0.5, 0.75, 1e-7, amsgrad=True),
        # step 2: v = 0.203125 falls below step 1's 0.25, which AMSGrad keeps: sqrt(0.25) = 0.5
        [-0.12499997500000501, -0.20767968693483108],
        GRADS,
        True,
    ),
    (
        "adam-keras-defaults",
        Adam(0.001),
        ("Adam", {"learning_rate": 0.001}),
        hand_adam((1.0, 0.01), 0.001, 0.9, 0.999, 1e-7, amsgrad=False),
        [-0.0009999901620141069, -0.0016774506405880297],
        (1.0, 0.01),
        False,
    ),
    (
        "amsgrad-keras-defaults",
        Adam(0.001, amsgrad=True),
        ("Adam", {"learning_rate": 0.001, "amsgrad": True}),
        hand_adam((1.0, 0.01), 0.001, 0.9, 0.999, 1e-7, amsgrad=True),
        [-0.0009999901620141069, -0.001677145715713171],
        (1.0, 0.01),
        False,
    ),
    (
        "nesterov",
        SGD(0.125, momentum=0.5, nesterov=True),
        ("SGD", {"learning_rate": 0.125, "momentum": 0.5, "nesterov": True}),
        hand_nesterov(GRADS, 0.125, 0.5),
        # step 1: v = -0.125, w = -0.0625 - 0.125; step 2: v = -0.0625 - 0.03125, w -= 0.046875 + 0.03125
        [-0.1875, -0.265625],
        GRADS,
        True,
    ),
    (
        "nesterov-momentum-0.9",
        SGD(0.01, momentum=0.9, nesterov=True),
        ("SGD", {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}),
        hand_nesterov(GRADS, 0.01, 0.9),
        [-0.019000000000000003, -0.03185],
        GRADS,
        False,
    ),
    (
        "centered-rmsprop",
        RMSprop(0.125, rho=0.5, centered=True),
        ("RMSprop", {"learning_rate": 0.125, "rho": 0.5, "centered": True}),
        hand_centered_rmsprop(GRADS, 0.125, 0.5, 0.0, 1e-7),
        # step 1: v = 0.5, mg = 0.5, increment = 0.125 / sqrt(0.25 + 1e-7)
        # step 2: v = 0.28125, mg = 0.375, increment = 0.03125 / sqrt(0.140625 + 1e-7)
        [-0.24999995000001501, -0.3333332537037345],
        GRADS,
        True,
    ),
    (
        "centered-rmsprop-momentum",
        RMSprop(0.125, rho=0.5, momentum=0.5, centered=True),
        ("RMSprop", {"learning_rate": 0.125, "rho": 0.5, "momentum": 0.5, "centered": True}),
        hand_centered_rmsprop(GRADS, 0.125, 0.5, 0.5, 1e-7),
        # step 2 moves by half of step 1's increment more
        [-0.24999995000001501, -0.45833322870374205],
        GRADS,
        True,
    ),
    (
        "centered-rmsprop-keras-defaults",
        RMSprop(0.001, centered=True),
        ("RMSprop", {"learning_rate": 0.001, "centered": True}),
        hand_centered_rmsprop(GRADS, 0.001, 0.9, 0.0, 1e-7),
        [-0.003333331481483025, -0.00420096296946325],
        GRADS,
        False,
    ),
]
IDS = [case[0] for case in CASES]
EXACT = [case for case in CASES if case[6]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_hand_values_are_the_numbers_written_down(case):
    _, _, _, hand, written, _, _ = case
    np.testing.assert_allclose(hand, written, rtol=FLOAT64_RTOL, atol=0)


def test_step_2_tells_each_variant_from_its_plain_form():
    # Each variant's step-2 value is far (relatively > 1e-4, against a float32 tolerance of 1e-6)
    # from the plain optimizer's, so a twin or Keras that ignored the variant fails below.
    by_id = {case[0]: case[3] for case in CASES}
    plain = {
        "amsgrad": hand_adam(GRADS, 0.125, 0.5, 0.75, 1e-7, amsgrad=False),
        "amsgrad-keras-defaults": hand_adam((1.0, 0.01), 0.001, 0.9, 0.999, 1e-7, amsgrad=False),
        "nesterov": [-0.125, -0.125 - (0.5 * 0.125 + 0.03125)],  # plain momentum: w += v
        "centered-rmsprop": [-0.125 / sqrt(0.5 + 1e-7), -0.125 / sqrt(0.5 + 1e-7) - 0.03125 / sqrt(0.28125 + 1e-7)],
        "centered-rmsprop-momentum": by_id["centered-rmsprop"],  # without momentum
    }
    for name, values in plain.items():
        assert abs(values[1] / by_id[name][1] - 1) > 1e-4, name


def twin_steps(twin, grads, dtype):
    params, state = [np.zeros((), dtype)], twin.init([np.zeros((), dtype)])
    values = []
    for g in grads:
        params, state = twin.apply(params, [np.asarray(g, dtype)], state)
        assert params[0].dtype == dtype
        values.append(float(params[0]))
    assert state.iterations == len(grads)
    return values


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twin_float32_gives_the_hand_values(case):
    _, twin, _, _, written, grads, _ = case
    np.testing.assert_allclose(twin_steps(twin, grads, np.float32), written, rtol=FLOAT32_RTOL, atol=0)


@pytest.mark.parametrize("case", EXACT, ids=[case[0] for case in EXACT])
def test_twin_float64_gives_the_hand_values(case):
    _, twin, _, _, written, grads, _ = case
    np.testing.assert_allclose(twin_steps(twin, grads, np.float64), written, rtol=FLOAT64_RTOL, atol=0)


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
    """Probabilities around each clip bound, in `dtype`: the bound itself and its neighbours."""
    t = np.dtype(dtype).type
    low, high = t(1e-7), t(1) - t(1e-7)  # Keras: epsilon and `1.0 - epsilon` in the dtype
    points = [np.nextafter(low, t(0)), low, np.nextafter(low, t(1)), t(0.5), np.nextafter(high, t(0)), high, np.nextafter(high, t(1))]
    return low, high, points


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twin_bce_gradient_at_the_clip_bounds(dtype):
    from kerasbp.reference.losses import binary_crossentropy_gradient

    low, high, points = bce_points(dtype)
    for y in (0.0, 1.0):
        for p in points:
            want = hand_bce_gradient(y, float(p), float(low), float(high))
            got = binary_crossentropy_gradient(np.array([[y]], dtype), np.array([[p]], dtype))[0, 0]
            # a division or two in the dtype: 4 ulps (exactly 0 outside the bounds)
            assert got == pytest.approx(want, rel=4 * float(np.finfo(dtype).eps), abs=0), (y, p)
    assert hand_bce_gradient(0.0, float(low), float(low), float(high)) != 0  # the bound passes the gradient


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


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_keras_float32_gives_the_hand_values(case):
    _, _, (class_name, kwargs), _, written, grads, _ = case
    np.testing.assert_allclose(keras_steps(class_name, kwargs, grads, "float32"), written, rtol=FLOAT32_RTOL, atol=0)


@pytest.mark.parametrize("case", EXACT, ids=[case[0] for case in EXACT])
def test_keras_float64_gives_the_hand_values(case):
    _, _, (class_name, kwargs), _, written, grads, _ = case
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
