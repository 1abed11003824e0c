"""kerasbp: where backpropagation happens inside a Keras 3 model, checked against a NumPy twin."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbp._quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from kerasbp.backprop import explain_backprop  # noqa: E402
from kerasbp.callbacks import GradientLog, GradientLogger, load_gradient_log  # noqa: E402
from kerasbp.compare import ComparisonReport, compare  # noqa: E402
from kerasbp.data import linear_data, load_xy_csv, xor_data  # noqa: E402
from kerasbp.models import compile_model, dense_model, linear_model, xor_model  # noqa: E402
from kerasbp import plotting  # noqa: E402
from kerasbp.reference import SGD, Adam, NumpyMLP, RMSprop, gradient_check, optimizer_from_keras, state_from_keras  # noqa: E402
from kerasbp.training import train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "ComparisonReport",
    "GradientLog",
    "GradientLogger",
    "NumpyMLP",
    "RMSprop",
    "compare",
    "compile_model",
    "dense_model",
    "explain_backprop",
    "gradient_check",
    "linear_data",
    "linear_model",
    "load_gradient_log",
    "load_xy_csv",
    "optimizer_from_keras",
    "plotting",
    "state_from_keras",
    "train",
    "xor_data",
    "xor_model",
]
