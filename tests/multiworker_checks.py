"""One worker of a two-process `tf.distribute.MultiWorkerMirroredStrategy` on localhost.

    python tests/multiworker_checks.py TASK PORT0 PORT1 FOLDER

`tests/test_distribution.py` starts two of them (tasks 0 and 1) and bounds them in time. Each
worker makes the strategy (`TF_CONFIG` names both), a model in its scope, then:

1. plain Keras 3.15.1 `fit` on NumPy arrays, which fails before the first step (recorded: the
   exception's type and message);
2. `GradientLogger(record="full", path=FOLDER/worker<TASK>)` at the start of training, which
   refuses the strategy by name before it writes anything.

It prints one JSON line: {"task", "replicas", "fit_error", "logger_error", "wrote"}.
"""

import json
import os
import sys

task, port0, port1, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]}, "task": {"type": "worker", "index": task}})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import kerasbp.native_logs  # noqa: F401,E402  (first: TensorFlow starts without its native log lines)
import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasbp as kb  # noqa: E402

rng = np.random.default_rng(0)
X = rng.normal(size=(32, 2)).astype("float32")
y = (X @ np.array([[1.5], [-2.0]])).astype("float32")
with strategy.scope():
    model = kb.dense_model([2, 3, 1], ["tanh", "linear"], seed=2)
    model.compile(keras.optimizers.SGD(0.05), "mse")
report = {"task": task, "replicas": strategy.num_replicas_in_sync, "fit_error": None, "logger_error": None}
try:
    model.fit(X, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
except Exception as e:  # noqa: BLE001  (the failure is what this records)
    report["fit_error"] = f"{type(e).__name__}: {str(e)[:300]}"
path = os.path.join(folder, f"worker{task}")
logger = kb.GradientLogger(record="full", path=path)
logger.set_model(model)
logger.set_params({"epochs": 1, "steps": 4})
try:
    logger.on_train_begin()
except ValueError as e:
    report["logger_error"] = str(e)
report["wrote"] = os.path.exists(path)
print(json.dumps(report), flush=True)
os._exit(0)  # no collective teardown waiting for the other worker
