"""`tf.distribute` glue for the capture: which strategy a model trains under, and the replicas' values.

Under `tf.distribute.MirroredStrategy` Keras 3.15 runs the train step once per replica
(`strategy.run` in `keras/src/backend/tensorflow/trainer.py`), each on its share of the global
batch, with the mean loss scaled by `1 / n_replicas` (`scale_loss_for_distribution` in
`keras/src/losses/loss.py`). The optimizer's `apply` therefore runs once per replica with that
replica's gradient; clipping happens there, per replica (`BaseOptimizer._backend_apply_gradients`),
and the all-reduce (a sum) deeper, in `TFOptimizer._backend_update_step` ->
`_all_reduce_sum_gradients` (`keras/src/backend/tensorflow/optimizer.py`); the update itself runs
once, in a cross-replica `merge_call`.

The capture keeps that structure: each replica's hooks see their own values (thread-local state:
MirroredStrategy traces each replica in its own thread), then one `merge_call` (`gather`) hands
every replica's values to the first replica, which alone writes the logged row: the sum of the
replicas' loss gradients (the global batch's gradient when the batch splits evenly), the
all-reduced gradient the update rule received, and, if asked, each replica's own gradient.
"""

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops



#: The strategies the capture supports: the replicas of these run in one process.
SUPPORTED = ("MirroredStrategy", "MultiWorkerMirroredStrategy (one worker)")


def strategy_of(model):
    """The `tf.distribute` strategy `model` trains under, or None for TensorFlow's default one.

    Keras records the strategy whose scope the model was made in (`Trainer.__init__` in
    `keras/src/backend/tensorflow/trainer.py`); a model made outside any scope trains under the
    strategy in scope at `fit`, if any.
    """
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    return strategy


def strategy_name(strategy):
    """The public name of `strategy`'s class (`tf.distribute.MultiWorkerMirroredStrategy` is a
    `CollectiveAllReduceStrategy` underneath), or None."""
    if strategy is None:
        return None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def multi_worker(strategy):
    """Whether `strategy` spans several worker processes (a `MultiWorkerMirroredStrategy` with a
    cluster in `TF_CONFIG`)."""
    extended = getattr(strategy, "extended", None)
    in_mode = getattr(extended, "_in_multi_worker_mode", None)
    return bool(in_mode()) if callable(in_mode) else False


def check_strategy(strategy):
    """Refuse the strategies the capture cannot record exactly.

    Args:
        strategy: a `tf.distribute.Strategy` or None.

    Returns:
        int, the number of replicas in sync (1 for None).

    Raises:
        ValueError: for a `MultiWorkerMirroredStrategy` over several workers (plain Keras 3.15.1
            `fit` fails there before the first step: see README, "Distributed training"), and
            for any strategy other than `MirroredStrategy` (TPU, parameter-server,
            central-storage, one-device strategies).
    """
    if strategy is None:
        return 1
    name = strategy_name(strategy)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        if multi_worker(strategy):
            raise ValueError(
                "GradientLogger does not support tf.distribute.MultiWorkerMirroredStrategy over several workers: plain "
                "Keras 3.15 model.fit itself fails there before the first step (a ValueError on a PerReplica input in "
                "Trainer._maybe_symbolic_build, then one in reduce_per_replica), so nothing is recorded and no worker "
                "writes a file. Train on one machine's devices with tf.distribute.MirroredStrategy. "
                f"Received: strategy={name} with {strategy.num_replicas_in_sync} replicas"
            )
        return strategy.num_replicas_in_sync
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        raise ValueError(f"GradientLogger supports the tf.distribute strategies {list(SUPPORTED)}. Received: strategy={name}")
    return strategy.num_replicas_in_sync


def distributed_now():
    """Whether the code being traced runs in a replica of a `tf.distribute` strategy."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def replica_index():
    """The index (in sync group) of the replica being traced: a Python int (0 outside a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return 0
    index = tf.get_static_value(context.replica_id_in_sync_group)
    return 0 if index is None else int(index)


def gather(payload, n_replicas):
    """Every replica's `payload`, seen from each replica: a `merge_call` that adds no operation.

    Call it once from every replica with payloads of the same structure (tensors).

    Args:
        payload: a nested structure (lists, tuples, dicts) of tensors.
        n_replicas: int, the replicas in sync.

    Returns:
        the same structure with each tensor replaced by a tuple of `n_replicas` tensors, the
        replicas' values in replica order.
    """

    def merge(strategy, values):
        def local(v):
            parts = tuple(strategy.experimental_local_results(v))
            return parts * n_replicas if len(parts) == 1 else parts  # the same object from every replica

        return tf.nest.map_structure(local, values)

    return tf.distribute.get_replica_context().merge_call(merge, args=(payload,))


def plain_variable(initial, name):
    """A `tf.Variable` on the current device, also inside a strategy's scope.

    In a `MirroredStrategy` scope `tf.Variable` makes a `MirroredVariable` (one copy per
    device, written only through cross-replica updates; `scatter_nd_update` on it raises
    `NotImplementedError`). The capture's buffers are written once per step by the first
    replica, so they are plain resource variables, made directly (past the strategy's variable
    creator).
    """
    if tf.distribute.has_strategy():
        return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name)
    return tf.Variable(initial, trainable=False, name=name)


def clipping_note(clipping, n_replicas):
    """The text that explains clipping under a strategy, or None when there is nothing to say.

    Args:
        clipping: dict `{"clipnorm", "global_clipnorm", "clipvalue"}` of thresholds (None where unset).
        n_replicas: int.
    """
    if n_replicas <= 1 or not any(v for v in clipping.values()):
        return None
    setting = ", ".join(f"{k}={v:g}" for k, v in clipping.items() if v)
    return (
        f"clipping ({setting}) acted per replica, before the all-reduce: under tf.distribute Keras 3 clips each of the "
        f"{n_replicas} replicas' gradients (each 1/{n_replicas} of its slice's mean-loss gradient) and then sums them, so "
        "the update follows the sum of the clipped replica gradients, not the clipped global gradient (the applied "
        f"gradient's norm can reach {n_replicas}x the threshold; JAX's keras.distribution clips after the reduction). "
        "The logged applied gradients are that sum; `clipped` is True where any replica was clipped"
    )


def local_strategy(devices):
    """A `MirroredStrategy` over `devices` devices of this machine, for the scripts' `--devices N`.

    The first `devices` GPUs if there are that many, else `devices` logical CPU devices made from
    the first physical CPU (`tf.config.set_logical_device_configuration`), which TensorFlow allows
    only before it has initialized its devices: call this first thing in a process.

    One strategy per device list is made and then reused: two `MirroredStrategy` objects over
    the same devices in one process can pick the same collective instance keys, and TensorFlow
    2.21 then aborts a step of the second model ("Shape mismatch in the collective instance").

    Args:
        devices: int >= 1, or None. None and 1 mean no strategy.

    Returns:
        `tf.distribute.MirroredStrategy`, or None.

    Raises:
        TypeError, ValueError: for a `devices` that is not a positive integer, or when TensorFlow
            already runs with fewer logical CPU devices than asked for.
    """
    from kerasbp.checks import check_positive_int

    if devices is None or check_positive_int("devices", devices) == 1:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= devices:
        return _mirrored(tuple(f"/gpu:{i}" for i in range(devices)))
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:  # TensorFlow has initialized its devices: use them if there are enough
        pass
    have = len(tf.config.list_logical_devices("CPU"))
    if have < devices:
        raise ValueError(
            f"`devices` must be at most the {have} logical CPU devices TensorFlow already runs with (it fixes them when it "
            f"first starts; ask for devices first thing in a fresh process). Received: devices={devices}"
        )
    return _mirrored(tuple(f"/cpu:{i}" for i in range(devices)))


#: device tuple -> the MirroredStrategy `local_strategy` made for it.
_LOCAL = {}


def _mirrored(devices):
    if devices not in _LOCAL:
        _LOCAL[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _LOCAL[devices]
