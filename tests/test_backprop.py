"""explain_backprop: the chain rule layer by layer, Keras autodiff beside the NumPy twin."""

import doctest

import keras
import numpy as np
import pytest

import kerasbp as kb
import kerasbp.backprop
from kerasbp.backprop import QUANTITIES, explain_backprop


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_xor_net_keras_and_numpy_agree(loss):
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "sgd", loss=loss)
    e = explain_backprop(model, X, y)
    assert e.layers == ["dense_1", "dense_0"]  # output first
    assert [t.name for t in e.terms[:5]] == list(QUANTITIES)
    assert abs(e.loss_keras - e.loss_numpy) < 1e-6
    # float32: values are ~1e-1..1e-3, and every term agrees to 1e-6 absolute
    assert max(t.max_abs_diff for t in e.terms if t.keras is not None) < 1e-6
    assert e.max_rel_diff < 1e-5  # a few float32 ulps after cancellation in the sums
    shapes = {(t.layer, t.name): t.shape for t in e.terms}
    assert shapes[("dense_1", "dL/dW")] == (4, 1) and shapes[("dense_0", "dL/dW")] == (2, 4)
    assert shapes[("dense_0", "delta = dL/dz")] == (4, 4) and shapes[("dense_0", "dL/da_prev")] == (4, 2)
    if loss == "binary_crossentropy":
        # the logits path: no Keras dL/da for the sigmoid output, and delta = (sigmoid(z) - y) / n
        assert e.term("dense_1", "dL/da").keras is None
        out = model(X).numpy()
        np.testing.assert_allclose(e.term("dense_1", "delta = dL/dz").keras, (out - y) / 4, rtol=1e-5)
    else:
        out = model(X).numpy()
        np.testing.assert_allclose(e.term("dense_1", "dL/da").keras, 2 * (out - y) / 4, rtol=1e-6)


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_float64_agreement_is_exact_to_rounding(float64, loss):
    X, y = kb.xor_data("float64")
    model = kb.compile_model(kb.xor_model(seed=1), "sgd", loss=loss)
    e = explain_backprop(model, X, y)
    assert e.max_rel_diff < 1e-12


def test_chain_rule_links_the_layers():
    X = np.random.default_rng(0).normal(size=(6, 3))
    y = np.random.default_rng(1).normal(size=(6, 2))
    model = kb.dense_model([3, 5, 4, 2], ["relu", "tanh", "linear"], seed=0)
    e = explain_backprop(model, X, y)  # uncompiled: MSE
    for upper, lower in (("dense_2", "dense_1"), ("dense_1", "dense_0")):
        np.testing.assert_allclose(e.term(upper, "dL/da_prev").keras, e.term(lower, "dL/da").keras, rtol=1e-6)
    # dL/dW = a_prev^T delta for the first layer, with a_prev = X
    np.testing.assert_allclose(e.term("dense_0", "dL/dW").numpy, X.T.astype("float32") @ e.term("dense_0", "delta = dL/dz").numpy, rtol=1e-5)
    assert "largest relative difference" in str(e)
    assert e.to_dict()["terms"][0] == {"layer": "dense_2", "name": "dL/da", "shape": [6, 2], "max_abs_diff": e.terms[0].max_abs_diff, "max_rel_diff": e.terms[0].max_rel_diff}


def test_unsupported_models_are_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="hard_sigmoid")])
    with pytest.raises(ValueError, match="hard_sigmoid"):
        explain_backprop(model, np.zeros((2, 3)), np.zeros((2, 2)))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dropout(0.5)])
    with pytest.raises(ValueError, match="Dropout"):
        explain_backprop(model, np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="3 features, but the model expects 2"):
        explain_backprop(kb.xor_model(seed=0), np.zeros((4, 3)), np.zeros(4))


@pytest.mark.parametrize(
    "twin_loss, name",
    [(kb.reference.MeanSquaredError(), "mse"), (kb.reference.BinaryCrossentropy(), "binary_crossentropy")],
    ids=["mse", "bce"],
)
def test_a_twin_loss_object_is_accepted_like_its_name(twin_loss, name):
    # kerasbp.reference.get_loss accepts the twin's loss objects; explain_backprop must too.
    X, y = kb.xor_data()
    model = kb.xor_model(seed=0)
    by_object = explain_backprop(model, X, y, loss=twin_loss)
    by_name = explain_backprop(model, X, y, loss=name)
    assert by_object.loss_keras == by_name.loss_keras and by_object.loss_numpy == by_name.loss_numpy
    for a, b in zip(by_object.terms, by_name.terms, strict=True):
        assert (a.layer, a.name) == (b.layer, b.name)
        np.testing.assert_array_equal(a.numpy, b.numpy)  # same computation: exact
        if b.keras is not None:
            np.testing.assert_array_equal(a.keras, b.keras)


def test_docstring_examples_run():
    results = doctest.testmod(kerasbp.backprop, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0, results
