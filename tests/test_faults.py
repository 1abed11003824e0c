"""Stopping and failing safely: Ctrl-C and SIGTERM at any moment, a killed run, a full disk."""

import errno
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kerasbp import GradientLogger, cli, interrupts, compile_model, load_gradient_log, train, xor_data, xor_model
from kerasbp.logger import GradientLog, sidecar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train_xor.py")


def _start(log, epochs=2_000_000):
    return subprocess.Popen(
        [sys.executable, SCRIPT, "--epochs", str(epochs), "--log-gradients", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc, ready, what, timeout=180):
    """Wait until `ready()` is true while `proc` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s")


def _wait_for_chunks(log, proc, n=1, timeout=180):
    """Wait until the run's sidecar holds `n` chunks: it is training and has logged steps."""
    folder = Path(sidecar.sidecar_path(log))
    _wait_for(proc, lambda: len(list(folder.glob("chunk-*.npz"))) >= n, f"{n} sidecar chunks", timeout)


#: When each test sends its signal: (what to wait for, then seconds more).
MOMENTS = {
    "importing": (None, 2.5),  # TensorFlow is still being imported (on a loaded 2-core machine)
    "tracing": ("sidecar", 0.0),  # the logger has started (its sidecar exists) and the loop is being traced
    "early": (1, 0.5),  # one sidecar chunk: training
    "late": (3, 0.5),  # three chunks: several seconds of training
}


def _stop(proc, sig, moment, log):
    """Send `sig` at `moment` (a key of MOMENTS) of the run logging to `log`;
    return (exit status, seconds to stop, stderr)."""
    wait, after = MOMENTS[moment]
    if wait == "sidecar":
        _wait_for(proc, lambda: os.path.isdir(sidecar.sidecar_path(log)), "sidecar folder")
    elif wait is not None:
        _wait_for_chunks(log, proc, n=wait)
    time.sleep(after)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running 60 s after {sig!r}; its stderr:\n{proc.communicate()[1]}") from None
    return proc.returncode, time.monotonic() - sent, err


@pytest.mark.parametrize(
    "sig, moment, status",
    [
        (signal.SIGINT, "importing", 130),
        (signal.SIGINT, "tracing", 130),
        (signal.SIGINT, "early", 130),
        (signal.SIGINT, "late", 130),
        (signal.SIGTERM, "early", 143),
    ],
    ids=["sigint-importing", "sigint-tracing", "sigint-early", "sigint-late", "sigterm-early"],
)
def test_a_signal_stops_the_script_and_keeps_the_log(tmp_path, sig, moment, status):
    log = tmp_path / "run.npz"
    proc = _start(log)
    code, delay, err = _stop(proc, sig, moment, log)
    assert code == status, err
    assert err.strip().splitlines()[-1] == f"interrupted ({'SIGTERM' if sig == signal.SIGTERM else 'Ctrl-C'})"
    assert delay < 20  # generous: the delay measured on an idle 2-core machine is in the closing note
    if moment == "importing" and not log.exists():  # (on a fast machine it may have started training by then)
        assert not os.path.exists(sidecar.sidecar_path(log))
        return
    # The log holds every step that ran, in order (none when stopped while tracing), and no sidecar.
    saved = load_gradient_log(log)
    assert f"gradient log of the {len(saved)} logged steps that ran saved to {log}" in err
    assert len(saved) > 0 or moment in ("importing", "tracing")
    np.testing.assert_array_equal(saved.steps, np.arange(len(saved)) * saved.every_n_steps)
    assert not os.path.exists(sidecar.sidecar_path(log))


def test_a_killed_run_keeps_what_reached_its_sidecar(tmp_path):
    log = tmp_path / "run.npz"
    proc = _start(log)
    _wait_for_chunks(log, proc, n=2)
    proc.kill()
    proc.communicate(timeout=60)
    assert not log.exists()
    with pytest.warns(RuntimeWarning, match=r"recovered \d+ logged steps"):
        recovered = load_gradient_log(log)
    n = len(recovered)
    assert n > 0
    np.testing.assert_array_equal(recovered.steps, np.arange(n) * recovered.every_n_steps)
    # The steps are those an uninterrupted run of the same settings logs: the script's defaults
    # (Adam 0.05, binary cross-entropy, seed 0), XLA-compiled as its long run was.
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    full = GradientLogger(every_n_steps=recovered.every_n_steps)
    train(model, X, y, epochs=int(recovered.steps[-1]) + 1, batch_size=4, callbacks=[full], jit_compile=True)
    np.testing.assert_array_equal(recovered.steps, full.steps)
    np.testing.assert_allclose(recovered.losses, full.losses, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(recovered.stats_array(), full.stats_array(), rtol=1e-4, atol=1e-7)


def test_a_full_disk_costs_the_log_not_the_results(tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", no_space)
    log = tmp_path / "run.npz"
    status = cli.main_xor(["--epochs", "50", "--log-gradients", str(log)])
    out, err = capsys.readouterr()
    assert status == 1
    assert "learned XOR" in out or "did not learn" in out  # the results were printed
    assert "saved to" not in out  # and nothing claims the log was saved
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: could not save the gradient log to {str(log)!r}: No space left on device (it needs about ")
    assert not log.exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_failed_final_save_says_where_the_steps_logged_while_training_are(tmp_path, monkeypatch, capsys):
    def no_space(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(GradientLog, "to_npz", no_space)  # the final save fails; the sidecar's chunks do not
    monkeypatch.setattr(sidecar.SidecarWriter, "due", lambda self: True)  # a chunk at every epoch's end
    log = tmp_path / "run.npz"
    assert cli.main_xor(["--epochs", "20", "--log-gradients", str(log)]) == 1
    err = capsys.readouterr().err.strip()
    partial = sidecar.sidecar_path(log)
    assert err.count("\n") == 0 and err.endswith(f"the steps it saved while training are in {partial!r}: kerasbp.load_gradient_log({str(log)!r}) recovers them"), err
    with pytest.warns(RuntimeWarning, match="recovered 20 logged steps"):
        assert load_gradient_log(log).steps.tolist() == list(range(20))


KILLED_STREAMING_RUN = """
import sys
import kerasbp as kb
X, y = kb.xor_data()
model = kb.compile_model(kb.xor_model(seed=0), "sgd", learning_rate=0.5)
kb.train(model, X, y, epochs=10**7, batch_size=4, callbacks=[kb.GradientLogger(record="full", path=sys.argv[1])])
"""


def test_a_killed_streaming_run_keeps_its_folder_loadable(tmp_path):
    folder = tmp_path / "grads"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STREAMING_RUN, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_chunks(folder / "log.npz", proc, n=2)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (folder / "log.npz").exists()
    with pytest.warns(RuntimeWarning, match=r"recovered \d+ logged steps"):
        log = load_gradient_log(folder)
    n = len(log)
    assert n > 0 and log.record == "full"
    np.testing.assert_array_equal(log.steps, np.arange(n))
    grads = log.gradients()
    assert [g.shape for g in grads] == [(n, 2, 4), (n, 4), (n, 4, 1), (n, 1)]
    # the rows in the raw files are the gradients whose norms the statistics give
    np.testing.assert_allclose(np.sqrt((np.asarray(grads[0]) ** 2).sum(axis=(1, 2))), log.stat("norm")[:, 0], rtol=1e-5)


class _SignalsInDel:
    """Sends `sig` to this process from its `__del__`, where Python prints and ignores the
    handler's exception, as it does inside TensorFlow's many finalizers."""

    def __init__(self, sig):
        self.sig = sig

    def __del__(self):
        os.kill(os.getpid(), self.sig)
        time.sleep(0.05)  # the handler runs here and its exception goes nowhere


@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, interrupts.Terminated)])
def test_an_interrupt_lost_in_a_finalizer_still_stops_training(sig, raised, monkeypatch):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), optimizer="sgd", learning_rate=0.5)
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lost.append)
    with interrupts.signals_as_interrupts():
        _SignalsInDel(sig)  # deleted at once
        gc.collect()
        assert [type(u.exc_value) for u in lost] == [raised]  # the handler's exception was lost
        with pytest.raises(raised):
            train(model, X, y, epochs=3, batch_size=4)
    assert len(model.history.history.get("loss", [])) == 0  # stopped before its first call
    interrupts.raise_pending()  # leaving the context forgot the signal: nothing raised
