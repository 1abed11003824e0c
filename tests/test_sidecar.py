"""Logs survive a killed run: the sidecar's chunks are recovered, a torn chunk is dropped."""

import os

import numpy as np
import pytest

from kerasbp import GradientLogger, compile_model, load_gradient_log, train, xor_data, xor_model
from kerasbp.logger import sidecar


def _trained_logger(epochs, **kwargs):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    logger = GradientLogger(**kwargs)
    train(model, X, y, epochs=epochs, batch_size=4, callbacks=[logger])
    return logger


def test_chunks_rebuild_the_log_in_order(tmp_path):
    logger = _trained_logger(30, record="full")
    path = tmp_path / "run.npz"
    writer = sidecar.SidecarWriter(path, every_seconds=3600)
    assert writer.flush(logger) == 0  # not yet time
    assert writer.flush(logger, force=True) == 30
    assert writer.flush(logger, force=True) == 0  # nothing new
    with pytest.warns(RuntimeWarning, match="recovered 30 logged steps"):
        arrays = sidecar.recover(path)
    np.testing.assert_array_equal(arrays["steps"], logger.steps)
    np.testing.assert_array_equal(arrays["stats"], logger.stats_array())
    np.testing.assert_array_equal(arrays["grad_0"], logger.gradients()[0])
    writer.remove()
    assert not os.path.exists(sidecar.sidecar_path(path))
    assert sidecar.recover(path) is None


def test_rows_added_between_flushes_go_to_the_next_chunk_and_a_torn_chunk_ends_recovery(tmp_path):
    X, y = xor_data()
    model = compile_model(xor_model(seed=0), "sgd", learning_rate=0.5)
    first = GradientLogger()
    train(model, X, y, epochs=10, batch_size=4, callbacks=[first])
    path = tmp_path / "run.npz"
    writer = sidecar.SidecarWriter(path, every_seconds=0)
    writer.flush(first)
    # The same logger logs 5 more steps; then a chunk is torn by a crash.
    train(model, X, y, epochs=5, batch_size=4, callbacks=[first])
    assert writer.flush(first) == 5
    (tmp_path / "run.npz.partial" / "chunk-000002.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.warns(RuntimeWarning) as record:
        arrays = sidecar.recover(path)
    messages = " ".join(str(w.message) for w in record)
    assert "dropped unreadable chunk" in messages and "recovered 15 logged steps" in messages
    np.testing.assert_array_equal(arrays["steps"], np.concatenate([np.arange(10), np.arange(10, 15)]))


@pytest.mark.parametrize("streaming", [False, True], ids=["file", "folder"])
def test_a_run_stopped_before_its_first_chunk_is_named_on_load(tmp_path, streaming):
    # Killed before the first chunk: the sidecar folder exists and holds nothing to recover.
    path = tmp_path / "run"
    if streaming:
        path.mkdir()
        os.makedirs(sidecar.sidecar_path(path / "log.npz"))
    else:
        path = tmp_path / "run.npz"
        os.makedirs(sidecar.sidecar_path(path))
    with pytest.raises(FileNotFoundError, match=r"stopped before it saved any logged step .*holds none\). Received: path="):
        load_gradient_log(path)
    os.rmdir(sidecar.sidecar_path(path / "log.npz" if streaming else path))
    with pytest.raises(FileNotFoundError, match="gradient log"):  # no sidecar: the plain message
        load_gradient_log(path)
