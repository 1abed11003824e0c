"""Each optimizer's first two steps on a scalar, worked by hand from its Keras source.

Hyperparameters are chosen exact in float32 (0.5, 0.75, 0.25, ...), so Keras's float32 rounding of
Python constants changes nothing and the hand values hold to float64 rounding (rel 1e-12). Each
test also runs Keras's own optimizer on a float64 variable with the same gradients. Adam, AMSGrad,
Nesterov SGD's second step and centered RMSprop are worked in tests/test_reference*.py (issue 20).
"""

import math

import keras
import numpy as np
import pytest

from kerasbp.reference import OPTIMIZERS, SCHEDULES, optimizer_from_keras, state_from_keras
from kerasbp.reference import schedules as twin_schedules

W0, G1, G2 = 1.0, 0.5, -0.25


def sign(x):
    return (x > 0) - (x < 0)


def hand_sgd(lr=0.5):
    w1 = W0 - lr * G1  # w -= lr * g
    return w1, w1 - lr * G2


def hand_sgd_momentum(lr=0.5, mom=0.5):
    v1 = mom * 0 - lr * G1  # v = momentum * v - lr * g; w += v
    v2 = mom * v1 - lr * G2
    return W0 + v1, W0 + v1 + v2


def hand_adagrad(lr=0.5, acc=0.25, eps=0.0):
    acc1 = acc + G1**2  # acc += g*g; w -= lr * g / sqrt(acc + eps)
    w1 = W0 - lr * G1 / math.sqrt(acc1 + eps)
    acc2 = acc1 + G2**2
    return w1, w1 - lr * G2 / math.sqrt(acc2 + eps)


def hand_adadelta(lr=1.0, rho=0.5, eps=0.25):
    w, ag, ad, out = W0, 0.0, 0.0, []
    for g in (G1, G2):
        ag = rho * ag + (1 - rho) * g * g
        d = -math.sqrt(ad + eps) * g / math.sqrt(ag + eps)
        ad = rho * ad + (1 - rho) * d * d
        w = w + lr * d
        out.append(w)
    return tuple(out)


def hand_adamax(lr=0.5, b1=0.5, b2=0.75, eps=0.25):
    w, m, u, out = W0, 0.0, 0.0, []
    for t, g in enumerate((G1, G2), start=1):
        m = m + (g - m) * (1 - b1)
        u = max(b2 * u, abs(g))
        w = w - lr * m / ((1 - b1**t) * (u + eps))
        out.append(w)
    return tuple(out)


def hand_nadam(lr=0.5, b1=0.5, b2=0.75, eps=0.25):
    d32 = float(np.float32(0.96))  # ops.cast(0.96, float64) in update_step; plain 0.96 in u_product
    w, m, v, u_product, out = W0, 0.0, 0.0, 1.0, []
    for t, g in enumerate((G1, G2), start=1):
        u_product = u_product * b1 * (1.0 - 0.5 * 0.96**t)
        u_t, u_t1 = b1 * (1 - 0.5 * d32**t), b1 * (1 - 0.5 * d32 ** (t + 1))
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        m_hat = u_t1 * m / (1 - u_product * u_t1) + (1 - u_t) * g / (1 - u_product)
        w = w - m_hat * lr / (math.sqrt(v / (1 - b2**t)) + eps)
        out.append(w)
    return tuple(out)


def hand_ftrl(lr=0.5, power=-0.5, acc=0.25, l1=0.125, l2=0.25, beta=0.5):
    w, n, z, out = W0, acc, 0.0, []
    for g in (G1, G2):
        l2_t = l2 + beta / (2 * lr)
        n_new = n + g * g
        z = z + g - (n_new ** (-power) - n ** (-power)) / lr * w
        quadratic = n_new ** (-power) / lr + 2 * l2_t
        w = (min(max(z, -l1), l1) - z) / quadratic
        n = n_new
        out.append(w)
    return tuple(out)


def hand_lion(lr=0.5, b1=0.5, b2=0.75):
    w, m, out = W0, 0.0, []
    for g in (G1, G2):
        w = w - lr * sign(m * b1 + g * (1 - b1))
        m = m * b2 + g * (1 - b2)
        out.append(w)
    return tuple(out)


def hand_lamb(lr=0.5, b1=0.5, b2=0.75, eps=0.25):
    w, m, v, out = W0, 0.0, 0.0, []
    for t, g in enumerate((G1, G2), start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        update = (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        ratio = abs(w) / abs(update) if update != 0 else 1.0  # trust ratio |w| / |update|; 1 for a zero update
        w = w - ratio * lr * update
        out.append(w)
    return tuple(out)


def hand_adafactor(lr=0.5, decay=-0.8, eps1=1e-30, eps2=0.125, clip=1.0):
    w, v, out = W0, 0.0, []
    for t, g in enumerate((G1, G2), start=1):
        rho = min(min(lr, 1 / math.sqrt(t)), 1 / math.sqrt(t))  # relative_step caps lr first
        alpha = max(eps2, abs(w)) * rho  # rms of a scalar is its absolute value
        beta_2_t = 1 - t**decay
        v = beta_2_t * v + (1 - beta_2_t) * (g * g + eps1)  # a vector: no factoring
        u = g / math.sqrt(v)
        u = u / max(1.0, abs(u) / clip)
        w = w - alpha * u
        out.append(w)
    return tuple(out)


def hand_adamw(lr=0.5, wd=0.25, b1=0.5, b2=0.75, eps=0.25):
    w, m, v, out = W0, 0.0, 0.0, []
    for t, g in enumerate((G1, G2), start=1):
        w = w - w * wd * lr  # decoupled weight decay first
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - m * alpha / (math.sqrt(v) + eps)
        out.append(w)
    return tuple(out)


CASES = {
    "sgd": ("SGD", {"learning_rate": 0.5}, hand_sgd),
    "sgd-momentum": ("SGD", {"learning_rate": 0.5, "momentum": 0.5}, hand_sgd_momentum),
    "adagrad": ("Adagrad", {"learning_rate": 0.5, "initial_accumulator_value": 0.25, "epsilon": 0.0}, hand_adagrad),
    "adadelta": ("Adadelta", {"learning_rate": 1.0, "rho": 0.5, "epsilon": 0.25}, hand_adadelta),
    "adamax": ("Adamax", {"learning_rate": 0.5, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 0.25}, hand_adamax),
    "nadam": ("Nadam", {"learning_rate": 0.5, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 0.25}, hand_nadam),
    "ftrl": (
        "Ftrl",
        {"learning_rate": 0.5, "initial_accumulator_value": 0.25, "l1_regularization_strength": 0.125, "l2_regularization_strength": 0.25, "beta": 0.5},
        hand_ftrl,
    ),
    "lion": ("Lion", {"learning_rate": 0.5, "beta_1": 0.5, "beta_2": 0.75}, hand_lion),
    "lamb": ("Lamb", {"learning_rate": 0.5, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 0.25}, hand_lamb),
    "adafactor": ("Adafactor", {"learning_rate": 0.5, "epsilon_2": 0.125}, hand_adafactor),
    "adamw": ("AdamW", {"learning_rate": 0.5, "weight_decay": 0.25, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 0.25}, hand_adamw),
}


def _twin_steps(twin, dtype="float64"):
    params = [np.array([W0], dtype)]
    state = twin.init(params)
    out = []
    for g in (G1, G2):
        params, state = twin.apply(params, [np.array([g], dtype)], state)
        out.append(float(params[0][0]))
    return out


def _keras_steps(cls, kwargs):
    var = keras.Variable(np.array([W0]), dtype="float64")
    opt = getattr(keras.optimizers, cls)(**kwargs)
    out = []
    for g in (G1, G2):
        opt.apply([keras.ops.convert_to_tensor(np.array([g]))], [var])
        out.append(float(var.numpy()[0]))
    return out, opt


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_first_two_steps_on_a_scalar_match_the_hand_values_and_keras(case):
    cls, kwargs, hand = CASES[case]
    twin = [s.twin for s in OPTIMIZERS.values() if s.keras_class == cls][0](**kwargs)
    expected = hand()
    # the twin against the hand-worked values: the same float64 formula, so 1e-12 relative
    np.testing.assert_allclose(_twin_steps(twin), expected, rtol=1e-12, atol=0)
    keras_values, keras_opt = _keras_steps(cls, kwargs)
    np.testing.assert_allclose(keras_values, expected, rtol=1e-12, atol=0)
    assert optimizer_from_keras(keras_opt) == twin


def test_float32_twin_matches_keras_float32_bit_for_bit_on_two_steps():
    for cls, kwargs, _ in CASES.values():
        twin = [s.twin for s in OPTIMIZERS.values() if s.keras_class == cls][0](**kwargs)
        var = keras.Variable(np.array([W0], "float32"))
        opt = getattr(keras.optimizers, cls)(**kwargs)
        keras_values = []
        for g in (G1, G2):
            opt.apply([keras.ops.convert_to_tensor(np.array([g], "float32"))], [var])
            keras_values.append(float(var.numpy()[0]))
        np.testing.assert_allclose(_twin_steps(twin, "float32"), keras_values, rtol=2e-7, atol=0, err_msg=cls)


# ---------------------------------------------------------------- common options on a scalar


def test_clipnorm_global_clipnorm_clipvalue_weight_decay_by_hand():
    from kerasbp.reference import SGD

    g = [np.array([3.0, 4.0]), np.array([12.0])]  # norms 5 and 12; global norm 13
    p = [np.zeros(2), np.zeros(1)]
    clipped, _ = SGD(1.0, clipnorm=1.0).apply(p, g, SGD(1.0, clipnorm=1.0).init(p))
    np.testing.assert_allclose(-clipped[0], [0.6, 0.8], rtol=1e-15)
    np.testing.assert_allclose(-clipped[1], [1.0], rtol=1e-15)
    opt = SGD(1.0, global_clipnorm=1.3)
    out, _ = opt.apply(p, g, opt.init(p))
    np.testing.assert_allclose(np.concatenate([-out[0], -out[1]]), [0.3, 0.4, 1.2], rtol=1e-14)
    opt = SGD(1.0, clipvalue=3.5)
    out, _ = opt.apply(p, g, opt.init(p))
    np.testing.assert_allclose(np.concatenate([-out[0], -out[1]]), [3.0, 3.5, 3.5], rtol=0)
    opt = SGD(0.5, weight_decay=0.25)  # w - w * wd * lr, then w - lr * g
    out, _ = opt.apply([np.array([2.0])], [np.array([1.0])], opt.init([np.zeros(1)]))
    assert out[0][0] == 2.0 - 2.0 * 0.25 * 0.5 - 0.5


def test_ema_and_gradient_accumulation_by_hand():
    from kerasbp.reference import SGD

    opt = SGD(1.0, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    p = [np.array([0.0])]
    state = opt.init(p)
    p, state = opt.apply(p, [np.array([1.0])], state)  # w = -1; first step: average = w
    assert p[0][0] == -1.0 and state.averages[0][0] == -1.0
    p, state = opt.apply(p, [np.array([1.0])], state)  # w = -2; average = 0.5 * -1 + 0.5 * -2; overwrite
    assert state.averages[0][0] == -1.5 and p[0][0] == -1.5
    opt = SGD(1.0, gradient_accumulation_steps=2)
    p = [np.array([0.0])]
    state = opt.init(p)
    p, state = opt.apply(p, [np.array([1.0])], state)  # accumulate only
    assert p[0][0] == 0.0 and state.accumulated_gradients[0][0] == 1.0
    p, state = opt.apply(p, [np.array([3.0])], state)  # mean of the two, then the update
    assert p[0][0] == -2.0 and state.accumulated_gradients[0][0] == 0.0 and state.iterations == 2


@pytest.mark.parametrize("name", sorted(SCHEDULES), ids=sorted(SCHEDULES))
def test_schedules_match_keras_inside_a_compiled_function(name):
    import tensorflow as tf

    args = {
        "ExponentialDecay": dict(initial_learning_rate=0.05, decay_steps=3, decay_rate=0.7),
        "InverseTimeDecay": dict(initial_learning_rate=0.05, decay_steps=3, decay_rate=0.5),
        "PiecewiseConstantDecay": dict(boundaries=[3, 6], values=[0.05, 0.02, 0.01]),
        "PolynomialDecay": dict(initial_learning_rate=0.05, decay_steps=7, end_learning_rate=0.001, power=2.0, cycle=True),
        "CosineDecay": dict(initial_learning_rate=0.0, decay_steps=7, alpha=0.3, warmup_target=0.05, warmup_steps=3),
        "CosineDecayRestarts": dict(initial_learning_rate=0.05, first_decay_steps=3),
    }[name]
    keras_schedule = getattr(keras.optimizers.schedules, name)(**args)
    twin = getattr(twin_schedules, name)(**args)
    step = tf.Variable(0, dtype=tf.int64)
    f = tf.function(lambda: keras_schedule(step))
    worst = 0.0
    for i in range(40):
        step.assign(i)
        k = float(f())
        worst = max(worst, abs(float(twin(i)) - k))
    # exact, except an ulp or two of float32 where TensorFlow's float32 cos is not correctly rounded
    assert worst <= (2 * float(np.spacing(np.float32(0.05))) if "Cosine" in name else 0.0), worst


def test_state_from_keras_reads_every_slot_after_two_steps():
    for cls, kwargs, _ in CASES.values():
        _, keras_opt = _keras_steps(cls, kwargs)
        twin = optimizer_from_keras(keras_opt)
        state = state_from_keras(keras_opt, twin)
        assert state.iterations == 2, cls
