"""The gradients Keras applies, recorded from inside `model.fit`.

- `log.py`: `GradientLog` (the data, `health()`, exports) and `load_gradient_log`; NumPy only.
- `capture.py`: the hooks on the optimizer and the buffers they write inside the train step
  (TensorFlow); `capture_jax.py` and `capture_torch.py` for the other backends; `hooks.py` and
  `statistics.py` (`keras.ops`) what they share.
- `sidecar.py`: logs that survive a killed run.
- `replicas.py`: under `tf.distribute.MirroredStrategy`; `gns.py`: the gradient noise scale
  from two batch sizes (NumPy only).
- `callback.py`: `GradientLogger`, the Keras callback that attaches a capture and keeps the log.
- `per_example.py`: with `GradientLogger(per_example=True)`, the statistics of the examples' own
  gradients inside the step (Dense layers in closed form, other layers by `tf.vectorized_map`).

`GradientLogger` loads lazily (PEP 562), so reading a saved log needs NumPy only.
"""

import importlib

from kerasbp.logger.log import STATS, GradientLog, Health, load_gradient_log

__all__ = ["STATS", "GradientLog", "GradientLogger", "Health", "load_gradient_log"]


def __getattr__(name):
    if name == "GradientLogger":
        return importlib.import_module("kerasbp.logger.callback").GradientLogger
    raise AttributeError(f"module 'kerasbp.logger' has no attribute {name!r}")
