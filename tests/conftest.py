import os

os.environ.setdefault("MPLBACKEND", "Agg")

import kerasbp.native_logs  # noqa: E402, F401  (first: TensorFlow starts without its native log lines)
import keras  # noqa: E402
import pytest  # noqa: E402


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
