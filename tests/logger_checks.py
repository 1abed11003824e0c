"""A check of `GradientLogger` shared by tests/test_logger.py (TensorFlow) and
tests/backends/test_backend_logger.py (JAX, torch): the callback that decides when to read the
device is the same on every backend, the capture that counts the rows is not."""

import numpy as np

from kerasbp import compile_model, dense_model
from kerasbp.logger import GradientLogger


def check_sampled_full_gradients_are_read_only_after_logged_steps(X, y, monkeypatch):
    """record="full" keeps one step's gradients on the device. With every_n_steps=3 the host
    knows which steps are logged, so it reads the device (which waits for the step to end)
    after those steps and at epoch ends only, not before every step; and it loses no row: the
    rows equal those of a log of every step. `(X, y)`: 37 examples of 2 inputs, 1 target."""
    logs, reads = {}, {}
    for every in (1, 3):
        collects = []
        original = GradientLogger._collect
        monkeypatch.setattr(GradientLogger, "_collect", lambda self, original=original: (collects.append(self._pending), original(self))[1])
        model = compile_model(dense_model([2, 4, 1], ["tanh", "linear"], seed=0), "sgd", learning_rate=0.05)
        logger = GradientLogger(every_n_steps=every, record="full")
        model.fit(X, y, epochs=2, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)  # 8 steps: 0, 3, 6
        model.fit(X, y, epochs=1, batch_size=10, shuffle=False, callbacks=[logger], verbose=0)  # steps 8..11: 9
        monkeypatch.undo()
        logs[every], reads[every] = logger, sum(collects)  # calls that asked the device for its row count
    assert logs[3].steps.tolist() == [0, 3, 6, 9]
    assert reads[3] <= len(logs[3].steps) + 3  # once per logged row and per epoch end (it was before every step)
    for sampled, every_step in zip(logs[3].gradients(), logs[1].gradients(), strict=True):
        np.testing.assert_array_equal(sampled, every_step[[0, 3, 6, 9]])
