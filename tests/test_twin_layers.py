"""The twin's layers, losses, regularizers and the kink-aware gradient check, worked by hand and
against central differences (float64)."""

import numpy as np
import pytest

from kerasbp.reference import (
    ACTIVATIONS,
    L1,
    L1L2,
    L2,
    LOSSES,
    Activation,
    BatchNormalization,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Dense,
    Dropout,
    Huber,
    MeanAbsoluteError,
    NumpyMLP,
    SparseCategoricalCrossentropy,
    class_weight_to_sample_weight,
    gradient_check,
)

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


def test_softmax_cross_entropy_gradient_is_p_minus_y_on_a_3_class_example():
    z = np.array([[1.0, 2.0, 0.5]])
    y = np.array([[0.0, 1.0, 0.0]])
    p = np.exp(z) / np.exp(z).sum()  # worked by hand: [0.2312, 0.6285, 0.1402]
    np.testing.assert_allclose(p, [[0.23122390, 0.62853172, 0.14024438]], rtol=1e-7)
    cce = CategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(cce.gradient(y, z), p - y, rtol=1e-14)  # n = 1: dL/dz = p - y
    assert float(cce(y, z)) == pytest.approx(-np.log(p[0, 1]), rel=1e-14)
    # the same through a network: a softmax Dense layer with categorical cross-entropy, on TF's
    # logits path, gives delta = (p - y) / n at the output
    mlp = NumpyMLP([Dense(np.eye(3), np.zeros(3), "softmax")], dtype="float64")
    deltas = mlp.backward(z, y, "categorical_crossentropy").deltas
    np.testing.assert_allclose(deltas[-1], p - y, rtol=1e-14)
    sparse = mlp.backward(z, [1], "sparse_categorical_crossentropy").deltas
    np.testing.assert_allclose(sparse[-1], p - y, rtol=1e-14)


def test_batch_norm_backward_by_hand_on_a_small_case():
    # x = [1, 3] in one unit: mean 2, biased var 1, x_hat = [-1, 1] (epsilon 0), gamma 2, beta 0.5
    bn = BatchNormalization(np.array([2.0]), np.array([0.5]), np.zeros(1), np.ones(1), momentum=0.5, epsilon=0.0)
    out, cache = bn.forward(np.array([[1.0], [3.0]]), training=True)
    np.testing.assert_allclose(out, [[-1.5], [2.5]])  # gamma * x_hat + beta
    np.testing.assert_allclose(cache["moving"], [[1.0], [1.0]])  # 0 * 0.5 + 2 * 0.5; 1 * 0.5 + 1 * 0.5
    g = np.array([[1.0], [0.0]])
    grad_x, (dgamma, dbeta), _ = bn.backward(cache, g)
    # dgamma = sum(g * x_hat) = -1, dbeta = sum(g) = 1; dx_hat = gamma * g = [2, 0];
    # dx = (1 / sqrt(var)) / N * (N * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))
    #    = 1/2 * ([4, 0] - 2 - [-1, 1] * (-2)) = [0, 0]: with two samples x_hat is always +-1,
    # so the output does not depend on x at all.
    assert dgamma.tolist() == [-1.0] and dbeta.tolist() == [1.0]
    np.testing.assert_allclose(grad_x, [[0.0], [0.0]], atol=1e-15)
    # three samples x = [0, 1, 5]: mean 2, var 14/3; g = [1, 0, 0], gamma 1
    bn = BatchNormalization(np.array([1.0]), np.array([0.0]), np.zeros(1), np.ones(1), epsilon=0.0)
    _, cache = bn.forward(np.array([[0.0], [1.0], [5.0]]), training=True)
    grad_x, _, _ = bn.backward(cache, np.array([[1.0], [0.0], [0.0]]))
    s = np.sqrt(14 / 3)
    x_hat = np.array([-2.0, -1.0, 3.0]) / s
    expected = (1 / s) / 3 * (3 * np.array([1.0, 0, 0]) - 1 - x_hat * x_hat[0])
    np.testing.assert_allclose(grad_x.ravel(), expected, rtol=1e-14)
    # by hand: x_hat * x_hat[0] = [6/7, 3/7, -9/7], so dx = ([3, 0, 0] - 1 - [6/7, 3/7, -9/7]) / (3 s)
    np.testing.assert_allclose(grad_x.ravel(), np.array([8.0, -10.0, 2.0]) / (21 * s), rtol=1e-14)


def _numeric_input_grad(layer, x, g, h=1e-6, **kw):
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = h
        num[idx] = np.sum(g * (layer.forward(x + d, **kw)[0] - layer.forward(x - d, **kw)[0])) / (2 * h)
    return num


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batch_norm_backward_matches_central_differences(training):
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    bn = BatchNormalization(rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, size=3))
    _, cache = bn.forward(x, training=training)
    grad_x, (dgamma, dbeta), _ = bn.backward(cache, g)
    np.testing.assert_allclose(grad_x, _numeric_input_grad(bn, x, g, training=training), rtol=0, atol=1e-8)
    for k, analytic in ((0, dgamma), (1, dbeta)):
        num = np.zeros(3)
        for j in range(3):
            params = bn.params
            for sgn in (1, -1):
                p = [q.copy() for q in params]
                p[k][j] += sgn * 1e-6
                bn2 = bn.astype("float64")
                bn2.set_params(p)
                num[j] += sgn * np.sum(g * bn2.forward(x, training=training)[0]) / 2e-6
        np.testing.assert_allclose(analytic, num, rtol=0, atol=1e-8)


def test_dropout_scales_then_masks_and_is_identity_in_inference():
    d = Dropout(0.25)
    x = np.ones((2, 2))
    mask = np.array([[1, 0], [1, 1]])
    out, cache = d.forward(x, training=True, mask=mask)
    np.testing.assert_allclose(out, [[4 / 3, 0], [4 / 3, 4 / 3]])
    grad, _, _ = d.backward(cache, np.ones((2, 2)))
    np.testing.assert_allclose(grad, out)
    assert d.forward(x, training=False, mask=mask)[0] is x
    with pytest.raises(ValueError, match=r"rate"):
        Dropout(1.0)


def _stack():
    rng = np.random.default_rng(1)
    return NumpyMLP(
        [
            Dense(rng.normal(size=(3, 4)), rng.normal(size=4), "tanh", kernel_regularizer=L2(0.1), bias_regularizer=L1L2(0.01, 0.02)),
            BatchNormalization(rng.normal(size=4), rng.normal(size=4), np.zeros(4), np.ones(4)),
            Dropout(0.5),
            Activation("selu"),
            Dense(rng.normal(size=(4, 3)), rng.normal(size=3), "softmax", kernel_regularizer=L1(0.05)),
        ],
        dtype="float64",
    )


def test_a_stack_of_every_layer_passes_the_gradient_check_with_masks_and_weights():
    mlp = _stack()
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(6, 3)), rng.integers(0, 3, size=6)
    masks = [rng.integers(0, 2, size=(6, 4))]
    errors = gradient_check(mlp, X, y, "sparse_categorical_crossentropy", sample_weight=rng.uniform(0.5, 2, 6), dropout_masks=masks)
    assert max(errors) < 1e-6, errors


@pytest.mark.parametrize("name", list(LOSSES), ids=list(LOSSES))
def test_every_loss_with_sample_weights_matches_central_differences(name):
    rng = np.random.default_rng(3)
    loss = {"huber": Huber(0.5)}.get(name) or LOSSES[name].twin()
    n, d = 5, 3
    if "categorical" in name:
        p = rng.dirichlet(np.ones(d), size=n)
        y = np.eye(d)[rng.integers(0, d, n)] if name.startswith("categorical") else rng.integers(0, d, n)
    elif name == "binary_crossentropy":
        p, y = rng.uniform(0.05, 0.95, size=(n, d)), rng.integers(0, 2, size=(n, d)).astype(float)
    else:
        p, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    w = rng.uniform(0, 2, n)
    analytic = loss.gradient(y, p, sample_weight=w)
    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        dp = np.zeros_like(p)
        dp[idx] = 1e-6
        num[idx] = (loss(y, p + dp, sample_weight=w) - loss(y, p - dp, sample_weight=w)) / 2e-6
    np.testing.assert_allclose(analytic, num, rtol=1e-7, atol=1e-8)  # central differences, h = 1e-6
    # the weighted mean over the batch, not over the weights (Keras's "sum_over_batch_size")
    assert float(loss(y, p, sample_weight=np.ones(n) * 2)) == pytest.approx(2 * float(loss(y, p)), rel=1e-14)


def test_class_weights_follow_fit():
    assert class_weight_to_sample_weight(np.array([[0.0], [1.0], [1.0]]), {0: 0.5}).tolist() == [0.5, 1.0, 1.0]
    assert class_weight_to_sample_weight(np.eye(3)[[2, 0]], {2: 4.0}).tolist() == [4.0, 1.0]
    with pytest.raises(TypeError, match=r"`class_weight` must be a dict"):
        class_weight_to_sample_weight([0, 1], [1.0, 2.0])


def test_regularizers_by_hand():
    w = np.array([1.0, -2.0, 0.0])
    assert float(L1(0.5)(w)) == 1.5 and L1(0.5).gradient(w).tolist() == [0.5, -0.5, 0.0]
    assert float(L2(0.25)(w)) == 1.25 and L2(0.25).gradient(w).tolist() == [0.5, -1.0, 0.0]
    assert float(L1L2(0.5, 0.25)(w)) == 2.75
    # Keras's float32 rounding of the factor in float64
    assert float(L2(0.1)(np.array([1.0]))) == float(np.float32(0.1))


def test_kinked_entries_are_reported_as_kinks_not_errors():
    # a relu net with zero biases: the [0, 0] row has every hidden pre-activation exactly 0
    rng = np.random.default_rng(0)
    mlp = NumpyMLP([(rng.normal(size=(2, 4)), np.zeros(4), "relu"), (rng.normal(size=(4, 1)), np.zeros(1), "sigmoid")], dtype="float64")
    errors = gradient_check(mlp, XOR_X, XOR_Y, "binary_crossentropy")
    assert errors.kinks == 4 and errors.kink_masks[1].all()  # the hidden biases
    assert max(errors) < 1e-6, errors
    for name in ("leaky_relu", "elu", "selu"):
        net = NumpyMLP([(rng.normal(size=(2, 4)), np.zeros(4), name), (rng.normal(size=(4, 1)), np.zeros(1), "linear")], dtype="float64")
        result = gradient_check(net, XOR_X, XOR_Y)
        assert result.kinks >= 4 and max(result) < 1e-6, (name, result)
    # mae at 0: a prediction equal to its target
    lin = NumpyMLP([(np.zeros((2, 1)), np.zeros(1), "linear")], dtype="float64")
    result = gradient_check(lin, XOR_X, np.zeros(4), "mae")
    assert result.kinks > 0 and max(result) < 1e-6


def test_a_real_backprop_bug_is_still_caught(monkeypatch):
    # the hidden delta computed from the output error instead of the error passed down
    rng = np.random.default_rng(0)
    mlp = NumpyMLP([(rng.normal(size=(2, 4)), rng.normal(size=4), "relu"), (rng.normal(size=(4, 1)), rng.normal(size=1), "sigmoid")], dtype="float64")
    real = Dense.backward

    def wrong(self, cache, grad_out=None, delta=None, input_grad=True):
        grad_in, grads, d = real(self, cache, grad_out, delta, input_grad)
        if grad_in is not None:  # the output layer sends down its own error, not delta @ W.T
            grad_in = np.repeat(d.mean(axis=1, keepdims=True), grad_in.shape[1], axis=1)
        return grad_in, grads, d

    monkeypatch.setattr(Dense, "backward", wrong)
    errors = gradient_check(mlp, XOR_X + 0.1, XOR_Y, "binary_crossentropy")
    assert errors[0] > 1e-2 and errors.kinks == 0


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"linear"}), ids=sorted(set(ACTIVATIONS) - {"linear"}))
def test_activations_equal_keras_values_and_gradients(name):
    import functools

    import keras
    import tensorflow as tf

    fn = functools.partial(keras.activations.gelu, approximate=True) if name == "gelu_approximate" else keras.activations.get(name)
    z = tf.constant(np.linspace(-3, 3, 12).reshape(3, 4))
    g = np.random.default_rng(0).normal(size=(3, 4))
    with tf.GradientTape() as tape:
        tape.watch(z)
        a = fn(z)
    keras_grad = tape.gradient(a, z, output_gradients=tf.constant(g)).numpy()
    act = ACTIVATIONS[name]
    twin_a = act.forward(z.numpy())
    np.testing.assert_allclose(twin_a, a.numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(act.vjp(z.numpy(), twin_a, g), keras_grad, rtol=1e-13, atol=1e-15)


def test_loss_kinks_and_bad_input():
    assert MeanAbsoluteError().kinks(np.zeros((1, 1)), np.zeros((1, 1)), 0.0).all()
    assert BinaryCrossentropy().kinks(np.zeros((1, 1)), np.full((1, 1), 1e-7), 1e-9).all()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        SparseCategoricalCrossentropy()([3], np.ones((1, 3)) / 3)
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(2,\)"):
        MeanAbsoluteError()(np.zeros(2), np.zeros((2, 1)), sample_weight=np.ones(3))
