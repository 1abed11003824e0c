"""Choosing Keras's backend: `kerasbp.backends.configured_backend` and the scripts' `--backend`.

These run under every backend, TensorFlow's default run included: none needs JAX or torch.
"""

import json
import subprocess
import sys
import textwrap

import keras
import pytest

from kerasbp.backends import BACKENDS, configured_backend
from kerasbp.cli import main_compare, main_xor

BACKEND = keras.backend.backend()


def test_configured_backend_follows_kerass_rules(tmp_path, monkeypatch):
    # keras/src/backend/config.py: KERAS_BACKEND if set and not empty, else "backend" of
    # $KERAS_HOME/keras.json, else tensorflow; a keras.json that is not JSON counts as empty.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert configured_backend() == "tensorflow"  # no keras.json
    (tmp_path / "keras.json").write_text(json.dumps({"floatx": "float32", "backend": "jax"}))
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "")
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert configured_backend() == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    (tmp_path / "keras.json").write_text("{not json")
    assert configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text(json.dumps({"floatx": "float32"}))
    assert configured_backend() == "tensorflow"


def test_help_names_the_default_backend(capsys):
    with pytest.raises(SystemExit):
        main_compare(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--backend BACKEND the Keras backend to run on: tensorflow, jax or torch" in text
    assert f"from KERAS_BACKEND or the \"backend\" of keras.json: here {BACKEND})" in text  # Keras runs in this process


def test_a_backend_other_than_the_running_one_is_refused(capsys):
    other = next(b for b in BACKENDS if b != BACKEND)
    assert main_xor(["--backend", other.upper(), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        f"error: --backend cannot change Keras's backend here: Keras is already imported in this process and runs on "
        f"'{BACKEND}'. Received: --backend='{other}'\n"
    )


BAD_BACKENDS = textwrap.dedent(
    """
    import json, os, sys
    from kerasbp.cli import main_xor
    statuses = [main_xor(["--backend", "theano"])]
    os.environ["KERAS_BACKEND"] = "cntk"  # configured, with no --backend
    statuses.append(main_xor([]))
    print(json.dumps({"statuses": statuses, "keras": "keras" in sys.modules}))
    """
)


def test_bad_backends_are_one_line_and_exit_2_before_keras_is_imported():
    proc = subprocess.run([sys.executable, "-c", BAD_BACKENDS], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout) == {"statuses": [2, 2], "keras": False}
    assert proc.stderr.splitlines() == [
        "error: --backend must be one of ['tensorflow', 'jax', 'torch']. Received: --backend='theano'",
        "error: Keras is configured to run on 'cntk' (KERAS_BACKEND or keras.json); choose tensorflow, jax or torch with --backend",
    ]
