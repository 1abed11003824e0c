import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)

import os

import keras
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # before any test imports matplotlib.pyplot: no windows


def set_float(dtype):
    # Keras caches its global dtype policy the first time a layer asks for it, so set_floatx
    # alone does not change the dtype of layers built afterwards: set the policy too.
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)


@pytest.fixture
def float64():
    """Run a test with floatx and the dtype policy float64; build models inside the test."""
    set_float("float64")
    yield
    set_float("float32")


@pytest.fixture
def count_traces():
    """`count_traces(model)`: wrap `model.train_step` and return a list that grows by one each
    time a loop calling it is traced (a traced step runs its Python once)."""

    def wrap(model):
        traces = []
        original = model.train_step

        def counting(data):
            traces.append(1)
            return original(data)

        model.train_step = counting
        return traces

    return wrap
