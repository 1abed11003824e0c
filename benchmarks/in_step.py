"""Table 5 of `benchmarks/run.py`: the in-step cost of the logger's statistics in a TensorFlow
graph, beside the floor of the bare reductions they need. TensorFlow only: `run.py` imports this
module on the TensorFlow backend alone, so its other tables run where TensorFlow is not installed.
"""

import statistics
import warnings

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np
import tensorflow as tf
from kerasbp.logger import hooks
from paired import rotated, timed, wide_model

tf.get_logger().setLevel("ERROR")  # each figure traces loops of its own, which TensorFlow warns of as "retracing"

def bare_reductions(grads, variables, buffer, slot):
    """The floor of the statistics in a TensorFlow graph: per variable the four reductions of its
    gradient (sum, sum of squares, min, max) and the sum of squares of its weights, each one
    kernel and one pass over memory, written into `buffer[slot]` (`(n_variables, 5)`); nothing
    else. Returns the weights' sums of squares, which the update must wait for (as the logger's)."""
    weights = [tf.nn.l2_loss(v.value) for v in variables]
    table = [tf.stack([tf.reduce_sum(g), tf.nn.l2_loss(g), tf.reduce_min(g), tf.reduce_max(g), w]) for g, w in zip(grads, weights, strict=True)]
    buffer.scatter_nd_update([[slot]], tf.stack(table)[None])
    return weights


def bench_in_step_cost(updates, repeats, jit_compile=False, optimizer="SGD"):
    """Per optimizer update on 784-256-256-10: microseconds without and with the capture, in a
    `tf.function` (`jit_compile=False`: TensorFlow's graph executor, what `fit` uses on a
    machine without a GPU) or compiled by XLA (what `fit` uses with a GPU, and `kerasbp.train`
    for long runs). `optimizer`: the name of a Keras optimizer class (default learning rate).
    In a graph, the same rounds also time `bare_reductions`, the floor of the capture's cost
    (`floor_added_us`), so that the two are compared under the same load."""
    model = wide_model()
    model.compile(getattr(keras.optimizers, optimizer)(), model.loss)
    model.build((None, 784))
    optimizer = model.optimizer
    optimizer.build(model.trainable_weights)
    rng = np.random.default_rng(0)
    sources = [tf.Variable(rng.normal(size=w.shape).astype("float32") * 1e-3) for w in model.trainable_weights]
    floor = tf.Variable(tf.zeros([256, len(sources), 5]))

    def make_loop(reduce=False):
        @tf.function(jit_compile=jit_compile)
        def loop():
            for i in tf.range(updates):
                # Gradients that change from update to update: constant ones would let Grappler
                # fold the statistics away, and XLA hoist them out of the loop. The factor costs
                # no pass of its own under XLA (fused into each consumer); in a graph the
                # gradient is read from its variable as it is.
                if jit_compile:
                    factor = 1.0 + tf.cast(i % 3, tf.float32)
                    grads = [s * factor for s in sources]
                else:
                    grads = [s.read_value() for s in sources]
                waits = bare_reductions(grads, model.trainable_weights, floor, i % 256) if reduce else []
                with tf.control_dependencies(waits):
                    optimizer.apply(grads, model.trainable_weights)

        return loop

    capture = hooks.capture_for(model, optimizer, steps_per_execution=1, every_n_steps=1, capacity=256, keep_full=False, snapshots=False, tracked=(False,) * len(sources))
    capture.attach()
    hooked = make_loop()
    with warnings.catch_warnings():  # no loss in a bare loop of updates: the logger says so once
        warnings.simplefilter("ignore", RuntimeWarning)
        hooked()
    capture.detach()

    def logged():
        capture.attach()
        try:
            hooked()
        finally:
            capture.detach()

    loops = {"plain": make_loop(), "logged": logged}
    if not jit_compile:
        loops["floor"] = make_loop(reduce=True)
    for loop in loops.values():
        loop()
    times = {name: [] for name in loops}
    for r in range(repeats):
        for name in rotated(list(loops), r):
            times[name].append(timed(loops[name]) / updates * 1e6)

    def added(name):
        return statistics.median(b - a for a, b in zip(times["plain"], times[name], strict=True))

    out = {"update_us": statistics.median(times["plain"]), "logged_update_us": statistics.median(times["logged"]), "added_us": added("logged")}
    if "floor" in loops:
        out["floor_added_us"] = added("floor")
    return out
