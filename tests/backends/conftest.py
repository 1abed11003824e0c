"""Backend tests: each file runs under the Keras backend it names, in its own pytest process
(`KERAS_BACKEND=jax python -m pytest tests/backends`), and is skipped under the others."""

import keras

if keras.backend.backend() == "jax":
    import jax

    # Float64 models on JAX need its 64-bit mode, set before any array is made.
    jax.config.update("jax_enable_x64", True)
