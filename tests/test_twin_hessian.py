"""The twin's per-example gradients and exact Hessian (`kerasbp.reference.curvature`), each checked
against a computation that shares none of its code: one-row batches, the batch gradient, complex-step
differentiation of a hand-written gradient, central differences of the twin's gradients, and the
closed form of linear regression."""

import numpy as np
import pytest

from kerasbp.reference import L2, BatchNormalization, Dense, Dropout, NumpyMLP, flatten_params, hessian_vector_product, unflatten_params

RNG = np.random.default_rng(0)
X6 = RNG.normal(size=(6, 3))
Y6 = (RNG.random(6) > 0.5).astype(float)

CASES = {
    "relu-mse": ([3, 5, 2], ["relu", "linear"], "mse"),
    "tanh-sigmoid-bce": ([3, 4, 1], ["tanh", "sigmoid"], "binary_crossentropy"),
    "sigmoid-softmax-cce": ([3, 4, 3], ["sigmoid", "softmax"], "categorical_crossentropy"),
    "tanh-relu-huber": ([3, 4, 4, 2], ["tanh", "relu", "linear"], "huber"),
    "elu-softplus-silu-mse": ([3, 4, 4, 4, 1], ["elu", "softplus", "silu", "linear"], "mse"),
}


def net_and_targets(case, seed=0):
    sizes, activations, loss = CASES[case]
    net = NumpyMLP.from_sizes(sizes, activations, seed=seed, dtype="float64")
    params = [p + 0.1 * np.random.default_rng(seed + 1).normal(size=p.shape) for p in net.params]  # nonzero biases
    net.set_params(params)
    d = sizes[-1]
    if loss == "categorical_crossentropy":
        y = np.eye(d)[np.arange(len(X6)) % d]
    elif loss == "binary_crossentropy":
        y = Y6
    else:
        y = np.random.default_rng(seed + 2).normal(size=(len(X6), d))
    return net, y, loss


# ---------------------------------------------------------------- per-example gradients


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_per_example_mean_is_the_batch_gradient_and_each_is_a_one_row_batch(case, weighted):
    net, y, loss = net_and_targets(case)
    w = np.linspace(0.5, 2.0, len(X6)) if weighted else None
    per_example = net.per_example_gradients(X6, y, loss, sample_weight=w)
    _, batch = net.gradients(X6, y, loss, sample_weight=w)
    assert [g.shape for g in per_example] == [(len(X6), *s) for s in net.param_shapes]
    for g, b in zip(per_example, batch, strict=True):
        np.testing.assert_allclose(g.mean(axis=0), b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max()))
    for i in range(len(X6)):  # example i's entry is the gradient of a batch of that example alone
        _, own = net.gradients(X6[i : i + 1], y[i : i + 1], loss, sample_weight=None if w is None else w[i : i + 1])
        for g, o in zip(per_example, own, strict=True):
            np.testing.assert_allclose(g[i], o, rtol=1e-12, atol=1e-15)


def test_per_example_with_a_regularizer_and_dropout_masks():
    rng = np.random.default_rng(3)
    layers = [Dense(rng.normal(size=(3, 4)), rng.normal(size=4), "tanh", kernel_regularizer=L2(0.1)), Dropout(0.5), Dense(rng.normal(size=(4, 1)), np.zeros(1), "linear")]
    net = NumpyMLP(layers, dtype="float64")
    y = rng.normal(size=6)
    masks = [(rng.random((6, 4)) > 0.5).astype(float)]
    per_example = net.per_example_gradients(X6, y, "mse", dropout_masks=masks)
    _, batch = net.gradients(X6, y, "mse", dropout_masks=masks)
    for g, b in zip(per_example, batch, strict=True):
        np.testing.assert_allclose(g.mean(axis=0), b, rtol=1e-12, atol=1e-14)
    _, own = net.gradients(X6[2:3], y[2:3], "mse", dropout_masks=[masks[0][2:3]])
    for g, o in zip(per_example, own, strict=True):  # the penalty belongs to every example's own loss
        np.testing.assert_allclose(g[2], o, rtol=1e-12, atol=1e-15)


def test_per_example_refuses_batch_normalization():
    net = NumpyMLP([Dense(np.ones((3, 2)), np.zeros(2)), BatchNormalization(None, None, np.zeros(2), np.ones(2)), Dense(np.ones((2, 1)), np.zeros(1))])
    with pytest.raises(ValueError, match="BatchNormalization.*couples the examples"):
        net.per_example_gradients(X6, Y6)


# ---------------------------------------------------------------- the Hessian


def complex_step_hessian(net, X, y, loss):
    """The Hessian of a two-layer tanh network by complex-step differentiation of a gradient written
    here by hand (every operation analytic): column j is `Im(grad(theta + i h e_j)) / h`, exact to
    rounding with `h = 1e-30` (no subtraction, so no cancellation). Shares no code with the twin."""
    shapes = net.param_shapes
    theta = flatten_params(net.params)
    n, d = len(X), net.n_outputs
    Y = np.asarray(y, float).reshape(n, d)

    def grad(t):
        W1, b1, W2, b2 = unflatten_params(t, shapes)
        a1 = np.tanh(X @ W1 + b1)
        z2 = a1 @ W2 + b2
        if loss == "mse":
            dz2 = 2 * (z2 - Y) / (n * d)
        else:  # binary cross-entropy from the logits: d/dz (softplus(z) - y z) = sigmoid(z) - y
            dz2 = (1 / (1 + np.exp(-z2)) - Y) / (n * d)
        dz1 = (dz2 @ W2.T) * (1 - a1 * a1)
        return flatten_params([X.T @ dz1, dz1.sum(0), a1.T @ dz2, dz2.sum(0)])

    h = 1e-30
    return np.stack([np.imag(grad(theta + 1j * h * np.eye(len(theta))[j])) / h for j in range(len(theta))], axis=1)


@pytest.mark.parametrize("output, loss", [("linear", "mse"), ("sigmoid", "binary_crossentropy")])
def test_hessian_equals_complex_step(output, loss):
    net = NumpyMLP.from_sizes([3, 4, 2 if loss == "mse" else 1], ["tanh", output], seed=1, dtype="float64")
    y = RNG.normal(size=(6, 2)) if loss == "mse" else Y6
    H = net.hessian(X6, y, loss)
    expected = complex_step_hessian(net, X6, y, loss)
    assert H.shape == (net_size(net), net_size(net))
    np.testing.assert_allclose(H, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def net_size(net):
    return sum(int(np.prod(s)) for s in net.param_shapes)


@pytest.mark.parametrize("case", list(CASES))
def test_hessian_is_symmetric_and_matches_differences_of_twin_gradients(case):
    net, y, loss = net_and_targets(case)
    H = net.hessian(X6, y, loss)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-14 * np.abs(H).max())
    theta, shapes = flatten_params(net.params), net.param_shapes

    def grad(t):
        probe = net.copy()
        probe.set_params(unflatten_params(t, shapes))
        return flatten_params(probe.gradients(X6, y, loss)[1])

    eps = 1e-5
    for seed in range(3):
        v = np.random.default_rng(seed).normal(size=len(theta))
        central = (grad(theta + eps * v) - grad(theta - eps * v)) / (2 * eps)  # truncation O(eps^2)
        np.testing.assert_allclose(H @ v, central, rtol=0, atol=1e-6 * max(1.0, np.abs(central).max()))
        np.testing.assert_allclose(flatten_params(hessian_vector_product(net, X6, y, v, loss)), H @ v, rtol=1e-12, atol=1e-14)


def test_hessian_with_an_l2_regularizer_adds_two_l2():
    rng = np.random.default_rng(5)
    kernel, bias = rng.normal(size=(3, 1)), rng.normal(size=1)
    plain = NumpyMLP([Dense(kernel, bias, "linear")], dtype="float64")
    regularized = NumpyMLP([Dense(kernel, bias, "linear", kernel_regularizer=L2(0.25))], dtype="float64")
    y = rng.normal(size=6)
    difference = regularized.hessian(X6, y) - plain.hessian(X6, y)
    expected = np.diag([0.5, 0.5, 0.5, 0.0])  # 2 * l2 on the kernel's entries, 0 on the bias
    np.testing.assert_allclose(difference, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("n_features", [1, 3])
def test_linear_regression_hessian_is_the_closed_form(n_features):
    rng = np.random.default_rng(n_features)
    X = rng.random((40, n_features))
    y = X @ rng.normal(size=n_features) + 0.1 * rng.normal(size=40)
    net = NumpyMLP([Dense(rng.normal(size=(n_features, 1)), rng.normal(size=1), "linear")], dtype="float64")
    A = np.hstack([X, np.ones((40, 1))])  # [X 1]
    expected = 2 / 40 * A.T @ A  # constant: no dependence on the weights or on y
    np.testing.assert_allclose(net.hessian(X, y), expected, rtol=1e-13, atol=0)


def test_hessian_of_a_float32_net_is_float64():
    net = NumpyMLP.from_sizes([3, 2, 1], ["tanh", "linear"], seed=0, dtype="float32")
    H = net.hessian(X6, Y6)
    assert H.dtype == np.float64 and H.shape == (11, 11)
    assert net.dtype == "float32"  # the network itself is untouched


def test_flatten_order_is_documented_c_order():
    net = NumpyMLP([Dense(np.arange(6.0).reshape(2, 3), np.array([6.0, 7.0, 8.0]), "linear")], dtype="float64")
    assert flatten_params(net.params).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    parts = unflatten_params(np.arange(9.0), net.param_shapes)
    assert [p.shape for p in parts] == [(2, 3), (3,)] and parts[0][1, 2] == 5.0


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused_by_name():
    net = NumpyMLP.from_sizes([3, 2, 1], ["tanh", "linear"], seed=0, dtype="float64")
    with pytest.raises(ValueError, match="`vector` must be 1-D of length 11.*Received shape \\(10,\\)"):
        hessian_vector_product(net, X6, Y6, np.zeros(10))
    with pytest.raises(ValueError, match="`vector\\[1\\]` must have shape \\(2,\\)"):
        hessian_vector_product(net, X6, Y6, [np.zeros((3, 2)), np.zeros(3), np.zeros((2, 1)), np.zeros(1)])
    with pytest.raises(ValueError, match="`X` has 2 features, but the network expects 3"):
        net.hessian(X6[:, :2], Y6)
    gelu = NumpyMLP.from_sizes([3, 2, 1], ["gelu", "linear"], seed=0)
    with pytest.raises(ValueError, match="activations .* Received layer 0 with activation 'gelu'"):
        gelu.hessian(X6, Y6)
    dropout = NumpyMLP([Dense(np.ones((3, 2)), np.zeros(2)), Dropout(0.5), Dense(np.ones((2, 1)), np.zeros(1))])
    with pytest.raises(ValueError, match="Dense layers only. Received layer 1: Dropout"):
        dropout.hessian(X6, Y6)
    probabilities = NumpyMLP.from_sizes([3, 3], ["linear"], seed=0, dtype="float64")
    with pytest.raises(ValueError, match="does not support CategoricalCrossentropy\\(from_logits=False\\) on probabilities"):
        probabilities.hessian(X6, np.eye(3)[np.arange(6) % 3], "categorical_crossentropy")


def test_docstring_examples_run():
    import doctest

    import kerasbp.reference.curvature

    results = doctest.testmod(kerasbp.reference.curvature, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results
