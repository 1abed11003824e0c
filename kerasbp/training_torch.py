"""`kerasbp.train` on torch: a Python loop over the epochs and batches of a call, each batch
the model's own eager `train_step`, as `fit` runs it (`keras/src/backend/torch/trainer.py`:
metrics reset per epoch, the module in train mode for the steps and in eval mode after).
Nothing is compiled: what `train` saves over `fit` is the per-epoch iterator and callbacks.
"""

import numpy as np
from keras import ops


def check_model(model):
    """Nothing to refuse on torch: each step is `fit`'s own."""


def make_run(model, data, batch_size, max_epochs, jit, capture, halt, own_step):
    """The function `run(n_epochs) -> (n_ran, {name: array (n_ran,)})` that trains up to
    `n_epochs` epochs of `data`. Arguments as `kerasbp.training_tf.make_run`; `jit`,
    `max_epochs` and `own_step` are unused. With `halt`, the capture's non-finite flag is read
    before every step (one device read a step)."""
    def tensors(arrays):
        return tuple(None if a is None else ops.convert_to_tensor(a) for a in arrays)

    X, y, sw = tensors(data[:3])
    val = None if data[3] is None else tensors(data[3])
    n = X.shape[0]

    def going_on():
        return not halt or capture is None or bool(capture.all_finite())

    def rows(arrays, start):
        return tuple(a[start : start + batch_size] for a in arrays if a is not None)

    def results():
        return {k: float(v) for k, v in model.get_metrics_result().items()}

    def run(n_epochs):
        history = []
        while len(history) < n_epochs and going_on():
            for metric in model.metrics:
                metric.reset_state()
            model.train()
            for start in range(0, n, batch_size):
                if not going_on():
                    break
                model.train_step(rows((X, y, sw), start))
            model.eval()
            logs = results()
            if val is not None:
                for metric in model.metrics:
                    metric.reset_state()
                for start in range(0, val[0].shape[0], batch_size):
                    model.test_step(rows(val, start))
                logs.update({f"val_{k}": v for k, v in results().items()})
            history.append(logs)
        return len(history), {k: np.array([logs[k] for logs in history]) for k in (history[0] if history else {})}

    return run
