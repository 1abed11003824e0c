"""Which Keras backend a process runs on, read without importing Keras.

Keras fixes its backend once, when it is first imported (`keras/src/backend/config.py`): the
environment variable `KERAS_BACKEND` if it is set and not empty, else the `"backend"` key of
`keras.json` in `$KERAS_HOME` (or `~/.keras`, or `/tmp/.keras` where the home folder is not
writable), else TensorFlow. `configured_backend` follows the same rules, so the scripts' `--help`
can show the default backend and `kerasbp.native_logs` can leave TensorFlow alone on the other
backends, both without the seconds that importing Keras takes. NumPy is not needed either.
"""

import json
import os
import sys

#: The Keras backends kerasbp supports.
BACKENDS = ("tensorflow", "jax", "torch")


def configured_backend():
    """The backend Keras will pick when imported in this process, as a str (not checked against
    `BACKENDS`: Keras refuses an unknown name itself).

    The same rules as Keras 3.15: `KERAS_BACKEND` if set and not empty, else `"backend"` in
    `$KERAS_HOME/keras.json` or `~/.keras/keras.json` (`/tmp/.keras/keras.json` when the home
    folder is not writable), else `"tensorflow"`. A `keras.json` that is not valid JSON counts as
    empty, as for Keras.
    """
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.expanduser(os.path.join(folder, "keras.json"))) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return "tensorflow"
    name = config.get("backend") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else "tensorflow"


def running_backend():
    """The backend of this process: Keras's own answer once Keras is imported, else
    `configured_backend()`."""
    config = getattr(sys.modules.get("keras"), "config", None)
    return config.backend() if config is not None else configured_backend()
