"""Keras's float type for a block of code: `floatx(dtype)` sets `floatx` and the dtype policy together.

Keras fixes its global dtype policy the first time a layer asks for it, so
`keras.config.set_floatx` alone does not change the dtype of layers built afterwards
(`keras/src/dtype_policies/dtype_policy.py`, `dtype_policy()`); `floatx` sets both.
"""

import contextlib

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras

from kerasbp.checks import check_dtype


@contextlib.contextmanager
def floatx(dtype):
    """Context manager: build and train under `dtype` as Keras's float type and dtype policy.

    Both are restored on exit, also after an exception.

    Args:
        dtype: `"float16"`, `"float32"` or `"float64"` (or a NumPy float dtype).

    Raises:
        ValueError: if `dtype` is not a float dtype, or is float64 on the JAX backend without
            JAX's 64-bit mode (JAX would make float32 arrays of it).

    Example:
        >>> with floatx("float64"):
        ...     keras.config.floatx()
        'float64'
    """
    dtype = check_dtype("dtype", dtype)
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            raise ValueError(
                "`dtype` float64 on the JAX backend needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 (or call "
                "jax.config.update('jax_enable_x64', True)) before any JAX array is made. Received: dtype='float64'"
            )
    before = keras.config.floatx(), keras.config.dtype_policy().name
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(before[0])
        keras.config.set_dtype_policy(before[1])
