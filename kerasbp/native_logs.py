"""Keep TensorFlow's native start-up and XLA log lines off stderr.

TensorFlow 2.19+ writes C++ log lines that ignore `TF_CPP_MIN_LOG_LEVEL=3`
(tensorflow/tensorflow#100442): at import ("All log messages before absl::InitializeLog() ...",
oneDNN and CUDA notices) and at the first XLA compilation ("XLA service ... initialized",
"Compiled cluster using XLA!"). When `TF_CPP_MIN_LOG_LEVEL` is 3 (kerasbp's default),
`quiet_native_logs()` sends file descriptor 2 to a temporary file for the duration of such a
call and writes back every line that is not one of those log lines, so Python warnings and
tracebacks still reach stderr. Set `TF_CPP_MIN_LOG_LEVEL=0` to see everything. Importing this module imports TensorFlow
that way (on the TensorFlow backend only), so kerasbp's Keras modules import it before Keras.
"""

import contextlib
import os
import re
import sys
import tempfile

from kerasbp.backends import running_backend

_NATIVE_LOG = re.compile(rb"^([IWE]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog|To enable the following instructions)")


@contextlib.contextmanager
def quiet_native_logs():
    """Context manager: drop TensorFlow's native log lines written to stderr inside it."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not _NATIVE_LOG.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def import_tensorflow_quietly():
    """Import `tensorflow` and list its devices without the native start-up log lines.

    Does nothing when TensorFlow is already imported or Keras runs, or is configured to run, on
    another backend (`kerasbp.backends.running_backend`: `KERAS_BACKEND` or `keras.json`), so
    that kerasbp needs no TensorFlow there. The modules of kerasbp that import Keras import this
    module first.
    """
    if "tensorflow" in sys.modules or running_backend() != "tensorflow":
        return
    with quiet_native_logs():
        import tensorflow as tf

        tf.config.list_physical_devices()


import_tensorflow_quietly()
