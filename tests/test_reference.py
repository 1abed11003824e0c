"""Tests of the NumPy twin on its own: activations, losses, NumpyMLP, optimizers, gradient check.

The comparisons with Keras are in `test_reference_keras.py`. Tolerances are stated at each
assertion: exact (or a few ulps) when the same formula is computed twice, 1e-12 when the same
mathematics is computed in a different order in float64, 1e-6 for central differences.
"""

import ast
import doctest
import importlib
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kerasbp.reference import (  # noqa: E402
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    SGD,
    Adam,
    AdamState,
    BinaryCrossentropy,
    MeanSquaredError,
    NumpyMLP,
    RMSprop,
    RMSpropState,
    SGDState,
    binary_crossentropy,
    binary_crossentropy_gradient,
    get_activation,
    get_loss,
    get_optimizer,
    gradient_check,
    mse,
    mse_gradient,
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    tanh_derivative,
)

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "kerasbp" / "reference"

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float64")
XOR_Y = np.array([[0], [1], [1], [0]], dtype="float64")


# ---------------------------------------------------------------- import hygiene


def test_reference_modules_do_not_import_keras_at_top_level():
    for path in sorted(REFERENCE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: lazy imports inside functions are allowed
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("keras", "tensorflow"), f"{path.name} imports {name}"


def test_importing_reference_alone_loads_neither_keras_nor_tensorflow():
    # kerasbp/__init__.py imports Keras for the rest of the package; stub the parent package so
    # that only kerasbp.checks and kerasbp.reference are really imported.
    package_dir = REFERENCE_DIR.parent
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('kerasbp'); pkg.__path__ = [%r]; sys.modules['kerasbp'] = pkg\n"
        "import kerasbp.reference as r\n"
        "r.NumpyMLP.from_sizes([2, 3, 1], 'tanh', seed=0).fit([[0, 1]], [1], r.Adam(), epochs=2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
        "print('LOADED', bad)\n"
    ) % str(package_dir)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize(
    "module", ["activations", "losses", "layers", "optimizers", "optimizer_state", "rounding", "gradcheck"]
)
def test_docstring_examples_run(module):
    # The modules of the twin that need no Keras; mlp, from_keras and the package docstring are run
    # in test_reference_keras.py.
    mod = importlib.import_module(f"kerasbp.reference.{module}")
    results = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results


def test_registries_are_keyed_by_keras_names():
    assert list(ACTIVATIONS) == [
        "linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_approximate", "silu", "softplus", "softmax",
    ]
    assert all(act.name == name for name, act in ACTIVATIONS.items())
    assert list(LOSSES) == [
        "mean_squared_error", "mean_absolute_error", "huber", "binary_crossentropy",
        "categorical_crossentropy", "sparse_categorical_crossentropy",
    ]
    assert all(spec.name == name == spec.twin.name for name, spec in LOSSES.items())
    assert list(OPTIMIZERS) == [
        "sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "ftrl", "lion", "lamb", "adafactor",
    ]
    for name, spec in OPTIMIZERS.items():
        assert spec.name == name == spec.twin.name
        assert spec.keras_class == spec.twin.__name__  # the twin is named after the Keras class
        assert set(spec.keras_slots) | {"accumulated_gradients", "averages"} == set(spec.state._fields[1:])
        assert isinstance(spec.twin().init([np.zeros(2)]), spec.state)
    assert get_loss("MSE").name == "mean_squared_error" and get_loss("bce").name == "binary_crossentropy"
    assert get_optimizer("RMSprop") == RMSprop()


# ---------------------------------------------------------------- activations


_ELEMENTWISE = sorted(name for name in ACTIVATIONS if name != "softmax")


@pytest.mark.parametrize("name", _ELEMENTWISE, ids=_ELEMENTWISE)
def test_activation_derivative_matches_central_difference(name):
    act = get_activation(name)
    z = np.linspace(-3.0, 3.0, 61) + 0.013  # avoid the kinks at exactly 0
    h = 1e-6
    numeric = (act.forward(z + h) - act.forward(z - h)) / (2 * h)
    # The derivative is computed from the cached output a = f(z) (or from z, per
    # `from_output`). Tolerance 1e-8 absolute (central differences in float64 with h = 1e-6).
    np.testing.assert_allclose(act.derivative(act.forward(z) if act.from_output else z), numeric, rtol=0, atol=1e-8)


def test_softmax_vjp_matches_central_difference():
    act = get_activation("softmax")
    rng = np.random.default_rng(0)
    z, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    h, numeric = 1e-6, np.zeros((3, 4))
    for i, j in np.ndindex(3, 4):
        dz = np.zeros((3, 4))
        dz[i, j] = h
        numeric[i, j] = np.sum(g * (act.forward(z + dz) - act.forward(z - dz))) / (2 * h)
    np.testing.assert_allclose(act.vjp(z, act.forward(z), g), numeric, rtol=0, atol=1e-8)


def test_relu_derivative_at_zero_is_zero_like_tensorflow():
    a = relu(np.array([-1.0, 0.0, 1e-30, 2.0]))
    assert relu_derivative(a).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_sigmoid_saturates_without_warnings_and_keeps_dtype():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        a = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert a.tolist() == [0.0, 0.5, 1.0]
    assert sigmoid(np.zeros(2, "float32")).dtype == np.float32
    assert sigmoid_derivative(np.float64(0.5)) == 0.25
    assert tanh_derivative(np.float64(0.5)) == 0.75


def test_get_activation_bad_input():
    with pytest.raises(ValueError, match=r"`activation` must be one of .*Received: activation='hard_tanh'"):
        get_activation("hard_tanh")
    with pytest.raises(TypeError, match=r"`activation` must be one of"):
        get_activation(3)
    assert get_activation(None).name == "linear"
    assert get_activation("ReLU").name == "relu"


# ---------------------------------------------------------------- losses


def test_mse_value_and_gradient_by_hand():
    y = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    p = np.array([[0.5, 0.0], [1.0, 2.0], [2.0, 3.0]])
    # per sample mean over d=2: (0.25 + 0)/2, (1 + 0)/2, (1 + 4)/2 -> mean over n=3: 3.125/3
    assert mse(y, p) == pytest.approx(3.125 / 3, rel=1e-15)
    # 2 * (p - y) / (n * d) with n * d = 6
    np.testing.assert_allclose(mse_gradient(y, p), (p - y) / 3, rtol=1e-15)


def test_bce_from_probabilities_clips_like_keras():
    # p = sigmoid(-20) = 2.06e-9 is clipped to 1e-7: loss = -log(1e-7) = 16.118..., gradient 0.
    p = np.array([[1 / (1 + np.exp(20.0))]])
    assert float(binary_crossentropy([1.0], p)) == pytest.approx(-np.log(1e-7), rel=1e-12)
    assert float(binary_crossentropy([1.0], p)) == pytest.approx(16.118, abs=5e-4)
    assert binary_crossentropy_gradient([1.0], p).item() == 0.0
    # inside the clip: d/dp -(y log p + (1-y) log(1-p)) / (n*d)
    p = np.array([[0.2], [0.7]])
    y = np.array([[1.0], [0.0]])
    expected = np.array([[-1 / 0.2], [1 / 0.3]]) / 2
    np.testing.assert_allclose(binary_crossentropy_gradient(y, p), expected, rtol=1e-14)
    expected_loss = -(np.log(0.2) + np.log(0.3)) / 2
    assert float(binary_crossentropy(y, p)) == pytest.approx(expected_loss, rel=1e-14)


def test_bce_from_logits_has_no_clipping():
    # max(z, 0) - z*y + log1p(exp(-|z|)) at z = -20, y = 1: 20 + log1p(exp(-20))
    value = binary_crossentropy([1.0], [[-20.0]], from_logits=True)
    assert float(value) == pytest.approx(20.0 + np.log1p(np.exp(-20.0)), rel=1e-15)
    # dL/dz = (sigmoid(z) - y) / (n*d), not zero when saturated
    assert binary_crossentropy_gradient([1.0], [[-20.0]], from_logits=True).item() == pytest.approx(-1.0, abs=1e-8)
    # large positive logits do not overflow
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        assert float(binary_crossentropy([0.0], [[800.0]], from_logits=True)) == pytest.approx(800.0, rel=1e-15)


@pytest.mark.parametrize(
    "loss",
    [mse, binary_crossentropy, mse_gradient, binary_crossentropy_gradient],
    ids=["mse", "bce", "mse_gradient", "bce_gradient"],
)
def test_targets_of_shape_n_are_reshaped_not_broadcast(loss):
    y_flat = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([[0.2], [0.6], [0.9], [0.4]])
    # (n,) against (n, 1) must equal the column version exactly (a broadcast would give (n, n)).
    np.testing.assert_array_equal(loss(y_flat, p), loss(y_flat.reshape(-1, 1), p))
    assert np.shape(loss(y_flat, p)) in ((), (4, 1))


@pytest.mark.parametrize("fn", [mse, binary_crossentropy, mse_gradient], ids=["mse", "bce", "mse_gradient"])
def test_loss_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"y_true of shape \(4,\), y_pred of shape \(4, 2\)"):
        fn(np.zeros(4), np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match=r"y_true of shape \(3, 1\), y_pred of shape \(4, 1\)"):
        fn(np.zeros((3, 1)), np.full((4, 1), 0.5))


def test_loss_bad_input():
    with pytest.raises(ValueError, match=r"`y_true` must be finite"):
        mse([np.nan, 1.0], [[0.0], [1.0]])
    with pytest.raises(TypeError, match=r"`y_pred` must hold numbers"):
        mse([1.0], [["a"]])
    with pytest.raises(TypeError, match=r"`from_logits` must be True or False. Received: from_logits='yes'"):
        binary_crossentropy([1.0], [[0.5]], from_logits="yes")
    with pytest.raises(TypeError, match=r"`from_logits` must be True or False"):
        BinaryCrossentropy(from_logits=1)
    with pytest.raises(ValueError, match=r"`loss` must be one of .*Received: loss='hinge'"):
        get_loss("hinge")
    with pytest.raises(TypeError, match=r"`loss` must be one of"):
        get_loss(3.0)


def test_get_loss_names():
    assert get_loss("MSE") == MeanSquaredError() == get_loss("mean_squared_error")
    assert get_loss("bce") == BinaryCrossentropy()
    assert get_loss(BinaryCrossentropy(from_logits=True)).from_logits is True


# ---------------------------------------------------------------- NumpyMLP


def _random_net(sizes, hidden, output, seed, dtype="float64"):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = output if i == len(sizes) - 2 else hidden
        layers.append((rng.normal(0, 0.8, (fan_in, fan_out)), rng.normal(0, 0.3, fan_out), act))
    return NumpyMLP(layers, dtype=dtype)


def test_forward_caches_z_and_a_per_layer():
    W1 = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]])
    b1 = np.array([0.0, 0.5, -1.0])
    W2 = np.array([[1.0], [-2.0], [3.0]])
    b2 = np.array([0.25])
    mlp = NumpyMLP([(W1, b1, "relu"), (W2, b2, "sigmoid")], dtype="float64")
    X = np.array([[1.0, 1.0], [-1.0, 2.0]])
    out = mlp.forward(X)
    z1 = X @ W1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2 + b2
    assert len(mlp.cache) == 2
    np.testing.assert_array_equal(mlp.cache[0].x, X)
    np.testing.assert_array_equal(mlp.cache[0].z, z1)
    np.testing.assert_array_equal(mlp.cache[0].a, a1)
    np.testing.assert_array_equal(mlp.cache[1].z, z2)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-z2)), rtol=1e-15)
    assert out.shape == (2, 1)


def test_deltas_are_the_seed_terms_and_give_the_gradients():
    mlp = _random_net([2, 4, 1], "sigmoid", "sigmoid", seed=3)
    result = mlp.backward(XOR_X, XOR_Y, "mse")
    a1, out = mlp.cache[0].a, mlp.cache[1].a
    n = 4
    # Seed notebook: d_output = (targets - output) * output*(1-output); d_hidden likewise.
    d_output = (XOR_Y - out) * out * (1 - out)
    d_hidden = (d_output @ mlp.params[2].T) * a1 * (1 - a1)
    # Keras's MSE multiplies by -2/(n*d) (d = 1). Tolerance 1e-14 relative (same terms, other order).
    np.testing.assert_allclose(result.deltas[1], -2 / n * d_output, rtol=1e-14)
    np.testing.assert_allclose(result.deltas[0], -2 / n * d_hidden, rtol=1e-14)
    np.testing.assert_allclose(result.grads[0], XOR_X.T @ result.deltas[0], rtol=1e-14)
    np.testing.assert_allclose(result.grads[1], result.deltas[0].sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(result.grads[2], a1.T @ result.deltas[1], rtol=1e-14)
    assert [g.shape for g in result.grads] == [(2, 4), (4,), (4, 1), (1,)]
    assert float(result.loss) == pytest.approx(np.mean((XOR_Y - out) ** 2), rel=1e-15)
    assert [d.shape for d in mlp.deltas(XOR_X, XOR_Y)] == [(4, 4), (4, 1)]


def test_sigmoid_output_with_bce_uses_logits_even_when_saturated():
    mlp = NumpyMLP([(np.zeros((1, 1)), np.array([-20.0]), "sigmoid")], dtype="float64")
    loss, grads = mlp.gradients([[1.0]], [1.0], "binary_crossentropy")
    assert float(loss) == pytest.approx(20.0, rel=1e-9)  # clipped probabilities would give 16.118
    # dL/dz = sigmoid(-20) - 1, exact to rounding
    assert grads[1].item() == pytest.approx(1 / (1 + np.exp(20.0)) - 1, rel=1e-15)
    # from_logits=True on a sigmoid output: Keras uses the sigmoid's logits too (with a warning)
    loss2, grads2 = mlp.gradients([[1.0]], [1.0], BinaryCrossentropy(from_logits=True))
    assert float(loss2) == float(loss) and grads2[1].item() == grads[1].item()


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=["float32", "float64"])
def test_computes_in_the_dtype_of_its_parameters(dtype):
    mlp = NumpyMLP.from_sizes([2, 3, 1], ["tanh", "sigmoid"], seed=0, dtype=dtype)
    other = "float64" if dtype == "float32" else "float32"
    X = XOR_X.astype(other)
    assert mlp.forward(X).dtype == np.dtype(dtype)
    loss, grads = mlp.gradients(X, XOR_Y.astype(other), "binary_crossentropy")
    assert loss.dtype == np.dtype(dtype)
    assert all(g.dtype == np.dtype(dtype) for g in grads)
    losses = mlp.fit(X, XOR_Y, Adam(), epochs=2)
    assert losses.dtype == np.dtype(dtype)
    assert all(p.dtype == np.dtype(dtype) for p in mlp.params)
    assert all(s.dtype == np.dtype(dtype) for s in mlp.optimizer_state.momentums)


def test_use_bias_false_layers_have_no_bias_parameter():
    mlp = NumpyMLP([(np.ones((2, 3)), None, "relu"), (np.ones((3, 1)), np.zeros(1), "linear")])
    assert mlp.param_shapes == [(2, 3), (3, 1), (1,)]
    _, grads = mlp.gradients([[1.0, 2.0]], [0.0])
    assert [g.shape for g in grads] == [(2, 3), (3, 1), (1,)]
    errors = gradient_check(mlp, [[1.0, 2.0], [0.5, -0.1]], [0.0, 1.0])
    assert max(errors) < 1e-6


def test_params_set_params_round_trip_and_copies():
    mlp = NumpyMLP.from_sizes([2, 4, 1], "sigmoid", seed=1)
    params = mlp.params
    params[0][0, 0] = 123.0  # a copy: the network is unchanged
    assert mlp.params[0][0, 0] != 123.0
    mlp.set_params(params)
    assert mlp.params[0][0, 0] == 123.0
    assert mlp.params[0].dtype == np.float32
    other = mlp.copy()
    other.set_params([np.zeros(s) for s in mlp.param_shapes])
    assert mlp.params[0][0, 0] == 123.0


def test_fit_batches_like_keras_with_shuffle_false():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 1))
    mlp = _random_net([3, 4, 1], "tanh", "linear", seed=5)
    manual = mlp.copy()
    opt = SGD(learning_rate=0.05, momentum=0.5)
    losses = mlp.fit(X, y, opt, epochs=2, batch_size=3)
    state = opt.init(manual.params)
    expected = []
    for _ in range(2):
        batch_losses = []
        for start, stop in [(0, 3), (3, 6), (6, 7)]:  # consecutive slices, last partial batch kept
            value, state = manual.train_step(X[start:stop], y[start:stop], opt, state)
            batch_losses.append(value)
        # History: batch-size-weighted mean of the losses computed before each update
        expected.append((3 * batch_losses[0] + 3 * batch_losses[1] + 1 * batch_losses[2]) / 7)
    np.testing.assert_allclose(losses, expected, rtol=1e-14)
    for p, q in zip(mlp.params, manual.params, strict=True):
        np.testing.assert_array_equal(p, q)
    assert mlp.optimizer_state.iterations == 6
    # the epoch loss is not the loss of the final weights
    assert abs(float(mlp.evaluate(X, y)) - losses[-1]) > 1e-6


def test_fit_batch_size_none_means_32():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 1))
    a = _random_net([2, 3, 1], "relu", "linear", seed=2)
    b = a.copy()
    np.testing.assert_array_equal(a.fit(X, y, "sgd", epochs=2), b.fit(X, y, "sgd", epochs=2, batch_size=32))
    assert a.optimizer_state.iterations == 4  # 2 epochs x (32 + 8)


def test_fit_continues_from_a_given_state():
    a = NumpyMLP.from_sizes([2, 4, 1], "sigmoid", seed=0, dtype="float64")
    b = a.copy()
    opt = Adam(learning_rate=0.05)
    a.fit(XOR_X, XOR_Y, opt, epochs=6, batch_size=4)
    b.fit(XOR_X, XOR_Y, opt, epochs=3, batch_size=4)
    b.fit(XOR_X, XOR_Y, opt, epochs=3, batch_size=4, state=b.optimizer_state)
    for p, q in zip(a.params, b.params, strict=True):
        np.testing.assert_array_equal(p, q)


def test_mlp_bad_input():
    good = (np.ones((2, 3)), np.zeros(3), "relu")
    with pytest.raises(ValueError, match=r"`layers` must hold at least one"):
        NumpyMLP([])
    with pytest.raises(TypeError, match=r"`layers` must be a list"):
        NumpyMLP("dense")
    with pytest.raises(ValueError, match=r"`layers\[0\]` must be a \(kernel, bias, activation\) triple"):
        NumpyMLP([(np.ones((2, 3)), np.zeros(3))])
    with pytest.raises(ValueError, match=r"layer 1's kernel has 4 input rows, but the layer below has 3 units"):
        NumpyMLP([good, (np.ones((4, 1)), np.zeros(1), "linear")])
    with pytest.raises(ValueError, match=r"layer 0's bias must have shape \(3,\).*Received a bias of shape \(2,\)"):
        NumpyMLP([(np.ones((2, 3)), np.zeros(2), "relu")])
    with pytest.raises(ValueError, match=r"`layers\[0\] activation` must be one of"):
        NumpyMLP([(np.ones((2, 3)), np.zeros(3), "hard_tanh")])
    with pytest.raises(ValueError, match=r"`layers\[0\] kernel` must be finite"):
        NumpyMLP([(np.full((2, 3), np.inf), np.zeros(3), "relu")])
    with pytest.raises(ValueError, match=r"`dtype` must be one of"):
        NumpyMLP([good], dtype="int32")

    mlp = NumpyMLP([good, (np.ones((3, 1)), np.zeros(1), "linear")])
    with pytest.raises(ValueError, match=r"`X` has 3 features, but the network expects 2"):
        mlp.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"`X` must be 2-D of shape \(n_samples, 2\)"):
        mlp.forward(np.ones(4))
    with pytest.raises(ValueError, match=r"`X` must be finite. Received nan at row 1, column 0"):
        mlp.forward([[0.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match=r"`y_true` and `y_pred` must have the same shape.*y_true of shape \(2, 2\)"):
        mlp.gradients(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`X` and `y` must have the same number of rows"):
        mlp.gradients(np.ones((2, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"`loss` must be one of"):
        mlp.gradients(np.ones((2, 2)), np.ones(2), loss="hinge")
    with pytest.raises(ValueError, match=r"`epochs` must be a positive integer. Received: epochs=0"):
        mlp.fit(np.ones((2, 2)), np.ones(2), SGD(), epochs=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer. Received: batch_size=-1"):
        mlp.fit(np.ones((2, 2)), np.ones(2), SGD(), batch_size=-1)
    with pytest.raises(TypeError, match=r"`optimizer` must be 'sgd', 'adam', 'adamw', 'rmsprop'"):
        mlp.fit(np.ones((2, 2)), np.ones(2), optimizer=0.1)
    with pytest.raises(ValueError, match=r"`optimizer` must be one of"):
        mlp.fit(np.ones((2, 2)), np.ones(2), optimizer="muon")
    with pytest.raises(ValueError, match=r"`params` must hold 4 arrays"):
        mlp.set_params([np.ones((2, 3))])
    with pytest.raises(ValueError, match=r"`params\[1\]` must have shape \(3,\). Received an array of shape \(4,\)"):
        mlp.set_params([np.ones((2, 3)), np.ones(4), np.ones((3, 1)), np.ones(1)])
    with pytest.raises(ValueError, match=r"`layer_sizes` must give the input width and at least one layer"):
        NumpyMLP.from_sizes([2], "relu")
    with pytest.raises(TypeError, match=r"`layer_sizes\[1\]` must be a positive integer"):
        NumpyMLP.from_sizes([2, 2.5, 1], "relu")
    with pytest.raises(ValueError, match=r"`activations` must hold one name per Dense layer \(2\)"):
        NumpyMLP.from_sizes([2, 3, 1], ["relu"])
    with pytest.raises(ValueError, match=r"`seed` must be None or an integer in \[0, 2\*\*31\)"):
        NumpyMLP.from_sizes([2, 3, 1], "relu", seed=-1)


# ---------------------------------------------------------------- gradient check

GRADCHECK_OUTPUTS = [
    pytest.param("linear", "mse", id="linear-mse"),
    pytest.param("sigmoid", "mse", id="sigmoid-mse"),
    pytest.param("tanh", "mse", id="tanh-mse"),
    pytest.param("relu", "mse", id="relu-mse"),
    pytest.param("sigmoid", "binary_crossentropy", id="sigmoid-bce-logits-path"),
    pytest.param("linear", BinaryCrossentropy(from_logits=True), id="linear-bce-from-logits"),
    pytest.param("linear", "binary_crossentropy", id="linear-bce-clipped-probabilities"),
]


@pytest.mark.parametrize("n_hidden", [1, 2, 3], ids=["1-hidden", "2-hidden", "3-hidden"])
@pytest.mark.parametrize("hidden", sorted(ACTIVATIONS), ids=sorted(ACTIVATIONS))
@pytest.mark.parametrize(("output", "loss"), GRADCHECK_OUTPUTS)
def test_gradient_check_below_1e6(n_hidden, hidden, output, loss):
    seed = 100 * n_hidden + sorted(ACTIVATIONS).index(hidden)
    rng = np.random.default_rng(seed)
    sizes = [3] + [int(u) for u in rng.integers(2, 6, size=n_hidden)] + [2]
    mlp = _random_net(sizes, hidden, output, seed)
    X = rng.normal(size=(6, 3))
    y = rng.uniform(0, 1, size=(6, 2)) if loss != "mse" else rng.normal(size=(6, 2))
    if loss == "binary_crossentropy" and output == "linear":
        # keep the linear outputs inside (0, 1) so the clipped-probability formula is exercised
        params = mlp.params
        mlp.forward(X)
        spread = np.max(np.abs(mlp.cache[-1].x @ params[-2]))
        params[-2] *= 0.35 / spread if spread > 0 else 1.0
        params[-1] = np.full_like(params[-1], 0.5)
        mlp.set_params(params)
        assert np.all((mlp.forward(X) > 0.1) & (mlp.forward(X) < 0.9))
    errors = gradient_check(mlp, X, y, loss=loss, eps=1e-6)
    assert len(errors) == len(mlp.params)
    assert max(errors) < 1e-6, errors


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=5),
    acts=st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_gradient_check_random_architectures(sizes, acts, seed):
    mlp = _random_net(sizes, acts[0], acts[-1], seed)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(5, sizes[0]))
    y = rng.normal(size=(5, sizes[-1]))
    # Central differences with eps = 1e-6 carry an absolute noise of about 1e-16 * L / eps ~ 1e-10
    # (the rounding of L), so a relative error of 1e-6 is only measurable for gradient arrays
    # whose largest entry exceeds ~1e-3 (random nets sometimes give a saturated unit a 1e-5 one).
    _, grads = mlp.gradients(X, y)
    assume(min(np.max(np.abs(g)) for g in grads) > 1e-3)
    assert max(gradient_check(mlp, X, y, "mse")) < 1e-6


def test_gradient_check_catches_a_wrong_gradient(monkeypatch):
    # The seed notebook forgets the hidden bias; a backward pass that drops a term must fail.
    mlp = _random_net([2, 4, 1], "sigmoid", "sigmoid", seed=0)
    real = NumpyMLP._backward

    def broken(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.grads[1][:] = 0.0  # hidden bias gradient lost
        return result

    monkeypatch.setattr(NumpyMLP, "_backward", broken)
    errors = gradient_check(mlp, XOR_X, XOR_Y)
    assert errors[1] == pytest.approx(1.0) and max(errors[0], errors[2], errors[3]) < 1e-6


def test_gradient_check_bad_input():
    mlp = NumpyMLP.from_sizes([2, 2, 1], "tanh", seed=0)
    with pytest.raises(TypeError, match=r"`mlp` must be a NumpyMLP"):
        gradient_check("net", XOR_X, XOR_Y)
    with pytest.raises(ValueError, match=r"`eps` must be a positive finite number. Received: eps=0"):
        gradient_check(mlp, XOR_X, XOR_Y, eps=0)
    with pytest.raises(ValueError, match=r"`X` has 3 features"):
        gradient_check(mlp, np.ones((4, 3)), XOR_Y)


# ---------------------------------------------------------------- optimizers on their own

OPTIMIZER_CASES = [
    pytest.param(SGD, {}, id="sgd"),
    pytest.param(SGD, {"momentum": 0.9}, id="sgd-momentum"),
    pytest.param(SGD, {"momentum": 0.9, "nesterov": True}, id="nesterov"),
    pytest.param(Adam, {}, id="adam"),
    pytest.param(Adam, {"amsgrad": True}, id="adam-amsgrad"),
    pytest.param(RMSprop, {}, id="rmsprop"),
    pytest.param(RMSprop, {"momentum": 0.9, "centered": True}, id="rmsprop-centered-momentum"),
]


def test_keras_defaults():
    assert SGD().get_config() == {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert Adam().get_config() == {
        "learning_rate": 0.001,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "amsgrad": False,
    }
    assert RMSprop().get_config() == {
        "learning_rate": 0.001,
        "rho": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-7,
        "centered": False,
    }


@pytest.mark.parametrize(("cls", "kwargs"), OPTIMIZER_CASES)
def test_optimizer_apply_is_pure_and_counts_iterations(cls, kwargs):
    opt = cls(**kwargs)
    params = [np.ones((2, 3)), np.zeros(3)]
    grads = [np.full((2, 3), 0.5), np.full(3, -1.0)]
    state = opt.init(params)
    assert state.iterations == 0
    before = [p.copy() for p in params]
    new_params, new_state = opt.apply(params, grads, state)
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p, b)  # inputs untouched
    assert new_state.iterations == 1 and state.iterations == 0
    assert all(not np.array_equal(p, b) for p, b in zip(new_params, before, strict=True))
    assert isinstance(new_state, (SGDState, AdamState, RMSpropState))


def test_known_value_sgd_momentum():
    # v = 0.9 v - 0.1 * 1; w += v: -0.1, -0.29, -0.561 (float32, tolerance 1e-6 relative)
    opt = SGD(learning_rate=0.1, momentum=0.9)
    params = [np.zeros(1, "float32")]
    state = opt.init(params)
    for expected in (-0.1, -0.29, -0.561):
        params, state = opt.apply(params, [np.ones(1, "float32")], state)
        assert params[0].item() == pytest.approx(expected, rel=1e-6)


def test_known_value_adam_epsilon_hat():
    opt = Adam(learning_rate=1e-3)
    params, state = opt.apply([np.zeros(1)], [np.full(1, 1e-6)], opt.init([np.zeros(1)]))
    moved = -params[0].item()
    # lr * sqrt(1 - b2) / (1 - b1) * 0.1 g / (sqrt(0.001) g + eps) = 2.40253e-4 (float64,
    # tolerance 1e-4 relative on the 5-digit value)
    assert moved == pytest.approx(2.4025e-4, rel=1e-4)
    textbook = 1e-3 * 1e-6 / (np.sqrt(1e-12) + 1e-7)  # Algorithm 1: m_hat = g, v_hat = g^2
    assert textbook == pytest.approx(9.09e-4, rel=1e-3)
    assert abs(moved - textbook) > 6e-4


def test_known_value_rmsprop_epsilon_inside_root():
    opt = RMSprop(learning_rate=0.01)
    params, _ = opt.apply([np.zeros(1)], [np.full(1, 1e-4)], opt.init([np.zeros(1)]))
    moved = -params[0].item()
    assert moved == pytest.approx(3.1466e-3, rel=1e-4)  # 0.01 * 1e-4 / sqrt(0.1 * 1e-8 + 1e-7)
    outside = 0.01 * 1e-4 / (np.sqrt(0.1 * 1e-8) + 1e-7)
    assert outside == pytest.approx(3.15e-2, rel=1e-3)


def test_rmsprop_docstring_tells_when_the_first_step_exceeds_the_learning_rate():
    # The first step is lr * g / sqrt((1 - rho) * g * g + epsilon): above lr only when
    # rho * g * g > epsilon. The docstring's examples must run and say so (float64, exact to 1e-4
    # relative on the printed digits).
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner()
    for test in finder.find(RMSprop, "RMSprop", globs={"np": np, "RMSprop": RMSprop}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted >= 2 and results.failed == 0, results
    assert "so the first steps are larger than `learning_rate`" not in RMSprop.__doc__

    def first_step(g):
        opt = RMSprop(learning_rate=0.01)
        params, _ = opt.apply([np.zeros(1)], [np.full(1, g)], opt.init([np.zeros(1)]))
        return -params[0].item()

    threshold = np.sqrt(1e-7 / 0.9)  # rho * g * g == epsilon
    assert first_step(1.0) == pytest.approx(0.01 / np.sqrt(0.1 + 1e-7), rel=1e-12)  # ~3.16 lr
    assert first_step(1e-4) < 0.01 < first_step(1.01 * threshold)
    assert first_step(0.99 * threshold) < 0.01


def test_float64_uses_float32_rounded_betas_and_sgd_momentum():
    # Adam's bias correction in float64 uses float64(float32(beta)); so does SGD's momentum.
    opt = Adam(learning_rate=0.1)
    params, _ = opt.apply([np.zeros(1)], [np.ones(1)], opt.init([np.zeros(1)]))
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    expected = -(0.1 * np.sqrt(1 - b2) / (1 - b1)) * (1 - 0.9) / (np.sqrt(1 - 0.999) + 1e-7)
    assert params[0].item() == pytest.approx(expected, rel=1e-15)
    unrounded = -(0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)) * (1 - 0.9) / (np.sqrt(1 - 0.999) + 1e-7)
    assert abs(params[0].item() / unrounded - 1) > 6e-6
    sgd = SGD(learning_rate=0.1, momentum=0.9)
    p, s = [np.zeros(1)], sgd.init([np.zeros(1)])
    for _ in range(2):
        p, s = sgd.apply(p, [np.ones(1)], s)
    assert s.momentums[0].item() == -0.1 * float(np.float32(0.9)) - 0.1


def test_optimizer_bad_input():
    for cls in (SGD, Adam, RMSprop):
        for lr in (0, -0.1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=r"`learning_rate` must be a positive finite number"):
                cls(learning_rate=lr)
        with pytest.raises(TypeError, match=r"`learning_rate` must be a positive finite number"):
            cls(learning_rate="0.1")
    with pytest.raises(ValueError, match=r"`momentum` must be a number in \[0.0, 1.0\). Received: momentum=1.0"):
        SGD(momentum=1.0)
    with pytest.raises(ValueError, match=r"`momentum` must be a number in \[0.0, 1.0\)"):
        RMSprop(momentum=-0.1)
    with pytest.raises(ValueError, match=r"`beta_1` must be a number in \[0.0, 1.0\)"):
        Adam(beta_1=1.0)
    with pytest.raises(ValueError, match=r"`beta_2` must be a number in \[0.0, 1.0\)"):
        Adam(beta_2=-0.5)
    with pytest.raises(ValueError, match=r"`rho` must be a number in \[0.0, 1.0\)"):
        RMSprop(rho=1.5)
    with pytest.raises(ValueError, match=r"`epsilon` must be a number in \[0.0, inf\)"):
        Adam(epsilon=-1e-7)
    with pytest.raises(TypeError, match=r"`nesterov` must be True or False"):
        SGD(nesterov="yes")
    with pytest.raises(TypeError, match=r"`amsgrad` must be True or False"):
        Adam(amsgrad=1)
    with pytest.raises(TypeError, match=r"`centered` must be True or False"):
        RMSprop(centered=None)
    opt = Adam()
    params = [np.zeros((2, 2)), np.zeros(2)]
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"`params` and `grads` must have the same length"):
        opt.apply(params, [np.zeros((2, 2))], state)
    with pytest.raises(ValueError, match=r"`grads\[1\]` must have the shape of `params\[1\]`"):
        opt.apply(params, [np.zeros((2, 2)), np.zeros(3)], state)
    with pytest.raises(ValueError, match=r"`state.momentums` must hold one array per parameter \(2\)"):
        opt.apply(params, [np.zeros((2, 2)), np.zeros(2)], state._replace(momentums=()))
    with pytest.raises(ValueError, match=r"`state.iterations` must be an integer >= 0"):
        opt.apply(params, [np.zeros((2, 2)), np.zeros(2)], state._replace(iterations=-1))
    with pytest.raises(TypeError, match=r"`params\[0\]` must be a float array"):
        opt.apply([np.zeros(2, int)], [np.zeros(2)], opt.init([np.zeros(2)]))
