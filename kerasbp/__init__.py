"""kerasbp: where backpropagation happens inside a Keras 3 model, checked against a NumPy twin.

The public names load lazily (PEP 562): `import kerasbp` imports neither Keras nor TensorFlow,
and `import kerasbp.reference` (the NumPy twin) needs NumPy only. The first use of a name
that needs Keras (`kerasbp.GradientLogger`, `kerasbp.xor_model`, ...) imports it. On Keras's JAX
and torch backends, only `train` (and `jobs` through it) and the logger's TensorFlow-only
options import TensorFlow.

Module map:
    data          xor_data, linear_data, spiral_data, load_xy_csv, least_squares, batch_slices, Standardizer
    models        xor_model, linear_model, dense_model, compile_model
    logger        GradientLogger (callback), GradientLog and Health (log), the capture in fit
    training      train: many tiny epochs in one compiled loop
    curvature     HessianProbe (callback): the Hessian's largest eigenvalue and trace inside fit
    backprop      explain_backprop: the chain rule layer by layer, Keras beside NumPy
    comparison    compare: Keras against the twin, step by step (comparison_report: ComparisonReport, NumPy only)
    reference     the NumPy twin: activations, losses, NumpyMLP, optimizers, gradient_check
    plotting      matplotlib figures
    jobs, cli     the training jobs behind scripts/ and their command lines
    backends      configured_backend: the backend Keras will pick, read without importing Keras
"""

import importlib
import os

# TensorFlow's C++ log lines: quiet unless the user asked for them (kerasbp.native_logs).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "GradientLog": "kerasbp.logger",
    "GradientLogger": "kerasbp.logger",
    "Health": "kerasbp.logger",
    "load_gradient_log": "kerasbp.logger",
    "HessianProbe": "kerasbp.curvature",
    "plot_gradient_noise": "kerasbp.plotting",
    "compare": "kerasbp.comparison",
    "ComparisonReport": "kerasbp.comparison_report",
    "explain_backprop": "kerasbp.backprop",
    "xor_data": "kerasbp.data",
    "linear_data": "kerasbp.data",
    "spiral_data": "kerasbp.data",
    "load_xy_csv": "kerasbp.data",
    "least_squares": "kerasbp.data",
    "compile_model": "kerasbp.models",
    "dense_model": "kerasbp.models",
    "linear_model": "kerasbp.models",
    "xor_model": "kerasbp.models",
    "train": "kerasbp.training",
    "SGD": "kerasbp.reference",
    "Adam": "kerasbp.reference",
    "RMSprop": "kerasbp.reference",
    "NumpyMLP": "kerasbp.reference",
    "gradient_check": "kerasbp.reference",
    "optimizer_from_keras": "kerasbp.reference",
    "state_from_keras": "kerasbp.reference",
}
_SUBMODULES = ("plotting", "reference")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"kerasbp.{name}")
    else:
        raise AttributeError(f"module 'kerasbp' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *__all__])
