"""`GradientLogger`: the Keras callback that records the gradients the optimizer applies in `fit`.

Thin: it attaches the backend's capture (`kerasbp/logger/hooks.py`'s `capture_for`: `capture.py`
on TensorFlow, `capture_jax.py`, `capture_torch.py`) at the start of training, reads the
rows it wrote from time to time, and keeps them as a `GradientLog` (`kerasbp/logger/log.py`),
streaming whole gradients to disk with `path=` and to TensorBoard with `tensorboard_dir=`.
"""

import math
import os
import warnings

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np

from kerasbp.backends import BACKENDS
from kerasbp.checks import check_bool, check_choice, check_output_path, check_positive_float, check_positive_int
from kerasbp.logger import gns, hooks, sidecar
from kerasbp.files import atomic_write
from kerasbp.logger.log import CLIPPING, FOLDER_LOG, STATS, GradientLog, gradient_file

#: Column of each statistic in a row of `stats`.
STATS_INDEX = {name: i for i, name in enumerate(STATS)}

#: Rows of the statistics buffer at least: the host reads it only every few hundred steps.
MIN_STATS_ROWS = 256


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


class GradientLogger(keras.callbacks.Callback, GradientLog):
    """Records the gradients the optimizer applies, at every `every_n_steps`-th step of `fit`.

    It works with a plain `model.fit(..., callbacks=[logger])` on any compiled Keras model with
    the TensorFlow, JAX or torch backend (and with `kerasbp.train`). A row is one train step (one batch handed
    to the optimizer). Per logged step it records the gradient of the loss handed to
    `optimizer.apply_gradients` in the train step, divided by the loss scale in effect
    (`LossScaleOptimizer`, also the one `compile` adds under the `mixed_float16` policy, or
    `loss_scale_factor`) and before clipping, and what the optimizer did with it: whether it
    applied an update (`applied`: not at a loss-scale overflow skip nor at a gradient-accumulation
    micro-step), the gradient its update rule received (after unscaling, accumulation and
    clipping: `applied_gradients()`, `applied_norm`), the learning rate of that update (schedules
    evaluated), the loss scale, and whether clipping acted. It is exact with `shuffle=True`, a
    last partial batch and `steps_per_execution > 1` (every step of an execution is recorded).
    Once trained, the logger is a `kerasbp.GradientLog` (steps, losses, statistics, exports,
    `health()`).

    The loss is seen where the train step passes it to `optimizer.scale_loss` (Keras's own
    `train_step`, and `kerasbp.train`) or computes it with `model.compute_loss`; a custom train
    step that does neither gets NaN losses and one warning. `keras.optimizers.MultiOptimizer` is
    refused.

    Under `tf.distribute.MirroredStrategy` (model made and compiled in its scope; see README,
    "Distributed training") a row is still one train step: the logged loss gradient is the sum
    over replicas of what each replica's `apply` received (each replica's mean-loss gradient
    times `1 / n_replicas`, which sums to the global batch's gradient when the batch splits
    evenly), the loss is the sum of the replicas' scaled losses, and the applied gradient is
    the all-reduced one the update rule received. Keras clips each replica's gradient before
    the all-reduce; the log says so in `notes` and `health()`, with one warning. With two or
    more replicas the gradient noise scale is estimated at every logged step (`noise`,
    `noise_scale()`). `MultiWorkerMirroredStrategy` over several workers and other strategies
    are refused, as are a `LossScaleOptimizer` and gradient accumulation under a strategy.
    On JAX under `keras.distribution.DataParallel` the jitted step sees only the gradient
    already reduced over the devices: a row holds the global batch's gradient, clipping acts
    after the reduction, `strategy` names the distribution and `n_replicas` is 1;
    `per_replica=True` is refused there.

    Args:
        every_n_steps: int >= 1, log the train steps whose 0-based number is a multiple of it.
            Defaults to 1.
        record: `"stats"` (per variable per step: `STATS`) or `"full"` (also the whole loss
            and applied gradient arrays). Defaults to `"stats"`.
        on_nonfinite: what to do when a logged step's loss or gradient holds NaN or Inf (a step
            that a `LossScaleOptimizer` skips for overflow is normal and never acted on):
            `"warn"` (a warning naming the first step, layer and variable), `"stop"` (also stop
            training: `kerasbp.train` stops at that very step, `fit` after that call of the
            train function) or `"raise"` (raise `FloatingPointError`, also at that step in
            `kerasbp.train`). Each run acts on its own first non-finite step. Defaults to `"warn"`.
        path: folder to stream full gradients to (one raw file per variable, memory-mapped back
            by `gradients()`; created if its parent folder exists; files of an earlier log there
            are replaced; at the end of training the rest of the log is saved beside them, so
            `kerasbp.load_gradient_log(path)` reads the folder), or None to hold them in
            memory. Defaults to None.
        max_memory_mb: positive float, the bound on full gradients held in memory without `path`
            and on the device-side buffer; past it, training stops with a `MemoryError` that
            suggests `path=` or a larger `every_n_steps`. Defaults to 512.
        tensorboard_dir: folder for TensorBoard event files (per variable gradient norms and
            histograms, and the loss), or None. Defaults to None.
        snapshots: bool, also record the weights and the optimizer's variables before each logged
            step (`weights()`, `optimizer_state()`), held in memory, so that any step can be
            replayed exactly (e.g. by `kerasbp.compare`). Defaults to False.
        per_example: bool, also compute per logged step, inside the compiled step, statistics of
            the examples' own gradients: the norm, inner-product and orthogonality tests, the
            mean GSNR and the noise scale B_simple (`noise`, `noise_scale()`), and each
            example's gradient norm (`per_example_norms()`). Example i's gradient is that of
            its own loss as Keras weighs it (sample and class weights included), so their mean
            is the logged batch gradient; weight penalties (`kernel_regularizer`,
            `bias_regularizer`) are added whole to every example's gradient. Dense layers in
            closed form from their inputs and output deltas (BackPACK's method: no batch x
            parameters tensor), other trainable layers (Conv, LayerNormalization, Embedding,
            ...) by `tf.vectorized_map` of each example's vector-Jacobian product at the step's
            weights; Dropout's masks are the step's own. Refused (`ValueError` naming the layer
            or loss): `BatchNormalization` in training mode (it couples the examples),
            recurrent layers, layers other than Dense that draw random numbers or run in mixed
            precision, LoRA or quantized Dense layers, Dense layers on inputs that are not 2-D,
            a layer called twice per step, a loss reduction other than
            `"sum_over_batch_size"`, on TensorFlow XLA (`jit_compile=True`), a distribution.
            Every backend: on torch and JAX Dense layers only (`per_example_torch.py`: eager
            steps; `per_example_jax.py`: a second forward and backward pass in the jitted step
            at each logged step, batches of at most 4096). Defaults to False.
        per_replica: bool, also record each replica's gradient as its `apply` received it
            (`replica_stat()`; with `record="full"` also `replica_gradients()`, streamed to
            `path` when given). Without a strategy the model is one replica. Defaults to False.

    Raises:
        TypeError, ValueError: for bad arguments.
        RuntimeError: at `fit` on a backend other than those in `BACKENDS`, with
            `tensorboard_dir` on a backend other than TensorFlow, or a model without optimizer.
        ValueError: at `fit` with a `keras.optimizers.MultiOptimizer`; under a `tf.distribute`
            strategy other than `MirroredStrategy` (or a one-worker
            `MultiWorkerMirroredStrategy`), or with a `LossScaleOptimizer` or gradient
            accumulation under a strategy; with `per_replica=True` under a `keras.distribution`
            on JAX; when a logger that holds rows is reused with another number of replicas.

    Example:
        >>> logger = GradientLogger()
        >>> model.fit(X, y, epochs=2, callbacks=[logger])  # doctest: +SKIP
        >>> logger.stats["sequential/dense_0/kernel"]["norm"]  # doctest: +SKIP
    """

    def __init__(
        self,
        every_n_steps=1,
        record="stats",
        on_nonfinite="warn",
        path=None,
        max_memory_mb=512,
        tensorboard_dir=None,
        snapshots=False,
        per_example=False,
        per_replica=False,
    ):
        keras.callbacks.Callback.__init__(self)
        GradientLog.__init__(self)
        self.every_n_steps = check_positive_int("every_n_steps", every_n_steps)
        self.record = check_choice("record", record, ("stats", "full"))
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("warn", "stop", "raise"))
        self.async_safe = self.on_nonfinite == "warn"  # see on_train_batch_end
        self.path = None if path is None else check_output_path("path", path) if not os.path.isdir(path) else os.fspath(path)
        if self.path is not None and self.record != "full":
            raise ValueError(f'`path` streams full gradients and needs record="full". Received: record={record!r}, path={path!r}')
        if self.path is not None and os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"`path` must be a folder (new or existing) to stream gradients to. Received a file: path={self.path!r}")
        self.max_memory_mb = check_positive_float("max_memory_mb", max_memory_mb)
        self.tensorboard_dir = None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        if self.tensorboard_dir is not None:
            try:
                import tensorboard  # noqa: F401  (optional dependency)
            except ImportError:
                raise ImportError("`tensorboard_dir` needs the tensorboard package: pip install 'kerasbp[tensorboard]'") from None
        self.snapshots = check_bool("snapshots", snapshots)
        self.per_example = check_bool("per_example", per_example)
        self.per_replica = check_bool("per_replica", per_replica)
        self.first_nonfinite = None  # {"step", "epoch", "layer", "variable"} of the first NaN/Inf gradient logged
        self.missing = []  # names of variables whose gradient came back None
        self._capture = None
        self._n_read = self._unread_rows = self._calls = 0
        self._steps_per_call = 1
        self._pending = True
        self._acted_on_nonfinite = False
        self._writer = None
        self._files = None  # open while training: one raw file per variable
        self._file_names = None
        self._sidecar = None  # while streaming to `path`: the rest of the log, every few seconds
        self._dtype = np.float32

    # ----------------------------------------------------------------- attaching to the model
    def on_train_begin(self, logs=None):
        if keras.backend.backend() not in BACKENDS:
            raise RuntimeError(
                f"GradientLogger supports the backends {list(BACKENDS)}; Keras is running on {keras.backend.backend()!r}. "
                "Set KERAS_BACKEND to one of them before importing keras."
            )
        if self.tensorboard_dir is not None and keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"GradientLogger(tensorboard_dir=...) needs the TensorFlow backend; Keras is running on {keras.backend.backend()!r}")
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise RuntimeError("GradientLogger needs a compiled model with an optimizer")
        if not model.built:
            raise ValueError(
                "GradientLogger needs a built model, so that its variables exist before training: "
                "start it with keras.Input(shape) or call model.build(input_shape) first"
            )
        hooks.leaf_optimizer(optimizer)  # refuses a MultiOptimizer
        if self.per_example and keras.backend.backend() == "torch":
            from kerasbp.logger.per_example_torch import check_torch_model  # torch only

            check_torch_model(model)  # refuses what has no per-example gradients on torch, by name
        elif self.per_example and keras.backend.backend() == "jax":
            from kerasbp.logger.per_example_jax import check_jax_model  # JAX only

            check_jax_model(model)  # refuses what has no per-example gradients on JAX, by name
        elif self.per_example:
            from kerasbp.logger import per_example  # TensorFlow only (checked above)

            per_example.check_model(model)  # refuses what has no per-example gradients, by name
        strategy, n_replicas = _strategy(model)  # refuses multi-worker and other strategies
        # Read before a capture is attached (this logger's earlier rows are all on the host).
        had_rows = len(self.steps) > 0
        if had_rows and n_replicas != self.n_replicas:
            raise ValueError(
                f"this GradientLogger holds rows recorded with {self.n_replicas} replicas; the model now trains with "
                f"{n_replicas}. Use a new logger"
            )
        # On JAX the train step under a keras.distribution is one program that sees the reduced
        # gradient: the log names the distribution, with one replica.
        distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
        self.strategy = strategy or (type(distribution).__name__ if distribution is not None else None)
        self.n_replicas = n_replicas
        next_step = int(self.steps[-1]) + 1 if had_rows else 0
        self._describe(model)
        hooks.detach(model)  # hooks left by an interrupted fit
        if not optimizer.built:
            optimizer.build(list(model.trainable_weights))  # as its first `apply` would; its slot variables now exist
        if self.snapshots:
            state = hooks.snapshot_variables(optimizer)
            self.optimizer_variable_names = [v.path for v in state]
            if self._weights is None:
                self._weights = [[] for _ in self.names]
                self._optimizer_state = [[] for _ in state]
        steps_per_call = int(self.params.get("steps_per_call") or getattr(model, "steps_per_execution", 1) or 1)
        keep_full = self.record == "full" or self.tensorboard_dir is not None
        # Statistics are small, so their buffer holds MIN_STATS_ROWS or more and the host reads
        # it only now and then; the full gradients' buffer holds what one call can write, read
        # before a call that could overflow it (`_rows_in_next_call`).
        self._steps_per_call = steps_per_call
        rows_per_call = steps_per_call // self.every_n_steps + 1  # at most
        capacity = rows_per_call if keep_full else max(rows_per_call, MIN_STATS_ROWS)
        self._dtype = np.float64 if any(v.dtype == "float64" for v in model.trainable_weights) else np.float32
        same = hooks.applied_same(optimizer)
        n_params = sum(math.prod(s) for s in self.shapes)
        copies = (1 if same else 2) + (n_replicas if self.per_replica else 0)
        buffer_mb = capacity * n_params * copies * np.dtype(self._dtype).itemsize / 2**20 if keep_full else 0
        if buffer_mb > self.max_memory_mb:
            raise MemoryError(
                f"GradientLogger(record='full') would need {buffer_mb:.1f} MB of device buffer for {capacity} steps per call "
                f"of {n_params} parameters, over max_memory_mb={self.max_memory_mb:g}. Lower steps_per_execution or raise max_memory_mb"
            )
        self._capture = hooks.capture_for(
            model,
            optimizer,
            every_n_steps=self.every_n_steps,
            capacity=capacity,
            keep_full=keep_full,
            snapshots=self.snapshots,
            tracked=tuple(alive is not None for alive in self._alive),
            per_example=self.per_example,
            per_replica=self.per_replica,
            steps_per_execution=steps_per_call,
        )
        # Per-run state: each fit reads from where the buffers are now and acts on its own
        # first non-finite step; train steps continue over the fits of this logger.
        self._fit_start = self._capture.start_run(next_step)
        self._n_read = self._capture.count
        self._unread_rows = self._calls = 0
        self._acted_on_nonfinite = False
        self._steps_per_epoch = self.params.get("steps") or None
        if had_rows and self.applied_same and not same and self.record == "full":
            self._separate_applied()  # an earlier fit stored the applied gradients as the loss gradients
        self.applied_same = self.applied_same and same if had_rows else same
        leaf = hooks.leaf_optimizer(optimizer)
        self.clipping = {name: float(getattr(leaf, name)) if getattr(leaf, name, None) else None for name in CLIPPING}
        note = None
        if n_replicas > 1:  # under a tf.distribute strategy
            from kerasbp.logger.replicas import clipping_note

            note = clipping_note(self.clipping, n_replicas)
        if note is not None and note not in self.notes:
            self.notes.append(note)
            warnings.warn(f"GradientLogger: {note}", RuntimeWarning, stacklevel=2)
        if self.path is not None:
            # The first fit starts the files afresh (an earlier log there is replaced); later
            # fits of this logger append to them.
            mode = "ab" if self._file_names else "wb"
            os.makedirs(self.path, exist_ok=True)
            kinds = (("grad",) if self.applied_same else ("grad", "applied")) + (("replica",) if self.per_replica else ())
            self._file_names = {kind: [gradient_file(self.path, j, kind) for j in range(len(self.names))] for kind in kinds}
            self._files = {kind: [open(name, mode if os.path.exists(name) else "wb") for name in names] for kind, names in self._file_names.items()}
            # The rest of the log reaches a sidecar of the folder's log every few seconds, so a
            # killed run's folder still loads (kerasbp.logger.sidecar).
            self._sidecar = sidecar.SidecarWriter(os.path.join(self.path, FOLDER_LOG), gradients=False, meta={"grad_dtype": np.dtype(self._dtype).name})
        if self.tensorboard_dir is not None and self._writer is None:
            import tensorflow as tf  # tensorboard_dir: TensorFlow only (checked above)

            self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
        self._capture.attach()
        self.missing = list(self._capture.missing)

    def _describe(self, model):
        """Names, layers, activations and shapes of the model's variables; dead-unit tracking."""
        variables = list(model.trainable_weights)
        names = [v.path for v in variables]
        if self.names and names != self.names:
            raise ValueError(f"this GradientLogger already holds a log of variables {self.names}; the model has {names}. Use a new logger")
        layer_of = {}
        for layer in model._flatten_layers(include_self=False):
            for v in layer.trainable_weights:
                layer_of[id(v)] = layer
        self.names = names
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]
        self.layers = [layer_of[id(v)].name if id(v) in layer_of else "" for v in variables]
        self.activations = [_activation_name(layer_of.get(id(v))) for v in variables]
        if self._grads is None:
            self._grads = [[] for _ in variables]
        if self._alive is None:
            # Dead units are tracked for relu layers' kernels: a unit whose gradient stays zero.
            self._alive = [np.zeros(s[-1:], bool) if len(s) >= 2 and a == "relu" else None for s, a in zip(self.shapes, self.activations, strict=True)]

    def on_train_batch_begin(self, batch, logs=None):
        self._raise_refused()
        # Read the device buffer only when the coming call could overflow it: a read waits for
        # the device, and a read per step would cost more than the statistics.
        rows = self._rows_in_next_call()
        if self._unread_rows + rows > self._capture.buffers.capacity:
            self._collect()
        self._pending = True  # the train function is about to run: rows will follow
        self._unread_rows += rows
        self._calls += 1

    def _rows_in_next_call(self):
        """Rows the coming call of the train function can write: with one train step per call
        exactly 1 or 0, since this run's train steps are numbered from `_fit_start` on (only
        steps whose number is a multiple of `every_n_steps` are logged); with more, an upper bound."""
        if self._steps_per_call == 1:
            return int((self._fit_start + self._calls) % self.every_n_steps == 0)
        return self._steps_per_call // self.every_n_steps + 1

    def on_train_batch_end(self, batch, logs=None):
        # "stop" and "raise" must act at the step a non-finite gradient appears. With "warn" this
        # does nothing, and `async_safe` lets Keras run it without waiting for the step's logs.
        if self.on_nonfinite != "warn":
            self._collect()

    def on_epoch_end(self, epoch, logs=None):
        self._collect()
        self._raise_refused()

    def _raise_refused(self):
        """Raise what the capture refused while its step was traced (JAX: a batch too wide for
        the per-example norms), after that step ran: an exception while Keras traces a JAX step
        would leave the model's variables unusable. The capture is discarded, so a new logger
        traces anew."""
        refused = getattr(self._capture, "refused", None)
        if refused is not None:
            hooks.discard(self._capture)
            raise refused

    def on_train_end(self, logs=None):
        self.detach()

    def detach(self):
        """Unhook the optimizer and flush files. `on_train_end` calls it; call it yourself after
        an interrupted `fit` before training the model without this logger."""
        self._sync()
        if self._capture is not None:
            self._capture.detach()
            self._capture = None  # it may serve another logger next: this one reads no more
        if self._files is not None:
            for files in self._files.values():
                for f in files:
                    f.close()
            self._files = None
            # The folder now holds a whole log: load_gradient_log(path) reads it.
            arrays = self._arrays(gradients=False, grad_dtype=np.dtype(self._dtype).name)
            atomic_write(os.path.join(self.path, FOLDER_LOG), lambda f: np.savez(f, **arrays))
            self._sidecar.remove()
            self._sidecar = None
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ reading the device
    def _sync(self):
        if self._capture is not None:
            self._pending = True
            self._collect()

    def _collect(self):
        """Read the rows written on the device since the last read and append them."""
        if not self._pending:
            return  # nothing ran since the last read (e.g. epoch ends replayed by kerasbp.train)
        self._pending = False
        self._unread_rows = 0
        count = self._capture.count
        if count <= self._n_read:
            return
        rows = self._capture.read(self._n_read, count)
        self._n_read = count
        steps = rows["steps"]
        epochs = (steps - self._fit_start) // self._steps_per_epoch if self._steps_per_epoch else np.zeros_like(steps)
        if rows["full"] is not None and self.record == "full":
            applied = None
            if not self.applied_same:
                applied = rows["applied_full"]
                if applied is None:  # this optimizer's update rule receives the loss gradient itself
                    applied = [np.where(rows["applied"].reshape(-1, *[1] * (g.ndim - 1)), g, np.nan).astype(g.dtype) for g in rows["full"]]
            self._store_full(rows["full"], applied, rows["replica_full"])
        if rows["replica_stats"] is not None:
            self._replica_stats.append(rows["replica_stats"])
        if rows["replica_noise"] is not None:
            norm, present = rows["stats"][:, :, STATS_INDEX["norm"]], ~np.isnan(rows["stats"][:, :, STATS_INDEX["nonfinite"]])
            global_squares = np.where(present, norm * norm, 0.0).sum(axis=1)  # |sum_r g_r|^2, as global_norms
            est = gns.from_replicas(rows["replica_noise"][:, :, 0], rows["replica_noise"][:, :, 1], global_squares)
            self._append_noise(b_simple_replicas=est["b_simple"], trace_replicas=est["trace"], g2_replicas=est["g2"])
        for j, alive in enumerate(rows["alive"]):
            if alive is not None:
                self._alive[j] |= alive  # combined with earlier runs of this logger
        if rows["weights"] is not None:
            for chunks, w in zip(self._weights + self._optimizer_state, rows["weights"] + rows["optimizer_state"], strict=True):
                chunks.append(w)
        columns = {key: rows[key] for key in ("steps", "losses", "iterations", "applied", "skipped", "clipped", "learning_rates", "loss_scales")}
        self._append(rows["stats"], noise=rows["noise"], per_example_norms=rows["per_example_norms"], epochs=epochs, **columns)
        if self._writer is not None:
            self._write_tensorboard(rows)
        if self._sidecar is not None:
            self._flush_sidecar()
        self._check_nonfinite(steps, epochs, rows["losses"], rows["stats"], rows["skipped"])

    def _flush_sidecar(self):
        """Every few seconds: the raw gradient files to the OS, then the new rows to the sidecar
        (in that order, so a chunk never counts rows that are not in the files)."""
        if not self._sidecar.due():
            return
        try:
            for files in self._files.values():
                for f in files:
                    f.flush()
            self._sidecar.flush(self)
        except OSError as e:  # a full disk costs the sidecar, not the run
            warnings.warn(f"GradientLogger: could not write the sidecar {self._sidecar.folder!r}: {e}; a killed run would lose its log", RuntimeWarning, stacklevel=2)
            self._sidecar = None

    def _separate_applied(self):
        """Store the applied gradients apart from the loss gradients from now on: until now the
        update rule received the loss gradient itself (rows that applied nothing are NaN)."""
        applied = self.applied_gradients()
        if self._file_names is not None:
            for j, g in enumerate(applied):
                with open(gradient_file(self.path, j, "applied"), "wb") as f:
                    f.write(np.ascontiguousarray(g).tobytes())
        else:
            self._applied_grads = [[np.array(g)] for g in applied]
        self._cache.clear()

    def _store_full(self, fulls, applied, replica=None):
        if self._files is not None:
            for kind, arrays in (("grad", fulls), ("applied", applied), ("replica", replica)):
                if arrays is not None:
                    for f, g in zip(self._files[kind], arrays, strict=True):
                        f.write(np.ascontiguousarray(g).tobytes())
            return
        if applied is not None and self._applied_grads is None:
            self._applied_grads = [[] for _ in self.names]
        if replica is not None and self._replica_grads is None:
            self._replica_grads = [[] for _ in self.names]
        held = sum(sum(c.nbytes for c in chunks) for chunks in self._grads + (self._applied_grads or []) + (self._replica_grads or []))
        held += sum(g.nbytes for g in fulls + (applied or []) + (replica or []))
        if held > self.max_memory_mb * 2**20:
            self.model.stop_training = True
            raise MemoryError(
                f"GradientLogger(record='full') holds {held / 2**20:.1f} MB of gradients, over max_memory_mb="
                f"{self.max_memory_mb:g}. Pass path=... to stream them to disk, or raise every_n_steps"
            )
        for chunks, g in zip(self._grads, fulls, strict=True):
            chunks.append(g)
        if applied is not None:
            for chunks, g in zip(self._applied_grads, applied, strict=True):
                chunks.append(g)
        if replica is not None:
            for chunks, g in zip(self._replica_grads, replica, strict=True):
                chunks.append(g)

    def _grad_array(self, j):
        return self._streamed(j, "grad") if self._file_names is not None else GradientLog._grad_array(self, j)

    def _applied_array(self, j):
        return self._streamed(j, "applied") if self._file_names is not None else GradientLog._applied_array(self, j)

    def _replica_array(self, j):
        return self._streamed(j, "replica") if self._file_names is not None else GradientLog._replica_array(self, j)

    def _streamed(self, j, kind):
        if self._files is not None:
            self._files[kind][j].flush()
        shape = (self.n_replicas, *self.shapes[j]) if kind == "replica" else self.shapes[j]
        dtype = np.dtype(self._dtype)
        file = gradient_file(self.path, j, kind)
        n = os.path.getsize(file) // (dtype.itemsize * max(1, math.prod(shape)))
        if n == 0:
            return np.zeros((0, *shape), dtype)
        return np.memmap(file, dtype=dtype, mode="r", shape=(n, *shape))

    def _write_tensorboard(self, rows):
        import tensorflow as tf  # tensorboard_dir: TensorFlow only

        norm, applied_norm = STATS_INDEX["norm"], STATS_INDEX["applied_norm"]
        stats, fulls = rows["stats"], rows["full"]
        with np.errstate(invalid="ignore", over="ignore"):
            global_norms = np.sqrt(np.nansum(stats[:, :, norm] ** 2, axis=1))
        with self._writer.as_default():
            for r, step in enumerate(rows["steps"]):
                step = int(step)
                tf.summary.scalar("loss", rows["losses"][r], step=step)
                tf.summary.scalar("global_gradient_norm", global_norms[r], step=step)
                tf.summary.scalar("loss_scale", rows["loss_scales"][r], step=step)
                tf.summary.scalar("applied", float(rows["applied"][r]), step=step)
                if rows["applied"][r]:
                    tf.summary.scalar("learning_rate", rows["learning_rates"][r], step=step)
                    tf.summary.scalar("clipped", float(rows["clipped"][r]), step=step)
                for j, name in enumerate(self.names):
                    tf.summary.scalar(f"gradient_norm/{name}", stats[r, j, norm], step=step)
                    if rows["applied"][r]:
                        tf.summary.scalar(f"applied_norm/{name}", stats[r, j, applied_norm], step=step)
                    if fulls is not None:
                        tf.summary.histogram(f"gradients/{name}", fulls[j][r], step=step)

    def _check_nonfinite(self, steps, epochs, losses, stats, skipped):
        # A LossScaleOptimizer's overflow skip is normal: not acted on.
        counts = stats[:, :, STATS_INDEX["nonfinite"]]
        bad = ((counts > 0).any(axis=1) | ~np.isfinite(losses)) & ~skipped
        if not bad.any() or self._acted_on_nonfinite:
            return
        r = int(np.flatnonzero(bad)[0])
        if (counts[r] > 0).any():
            j = int(np.flatnonzero(counts[r] > 0)[0])
            what = f"non-finite gradient at step {int(steps[r])} (epoch {int(epochs[r])}) in layer {self.layers[j]!r}, variable {self.names[j]!r}: {int(counts[r, j])} NaN/Inf entries"
            layer, variable = self.layers[j], self.names[j]
        else:
            what = f"non-finite loss at step {int(steps[r])} (epoch {int(epochs[r])}): {float(losses[r])!r}, its gradients still finite"
            layer = variable = None
        if self.first_nonfinite is None:
            self.first_nonfinite = {"step": int(steps[r]), "epoch": int(epochs[r]), "layer": layer, "variable": variable}
        self._acted_on_nonfinite = True
        if self.on_nonfinite == "raise":
            self.detach()
            raise FloatingPointError(what)
        if self.on_nonfinite == "stop":
            self.model.stop_training = True
            what += "; training stopped"
        warnings.warn(what, RuntimeWarning, stacklevel=2)


def _strategy(model):
    """`(name, replicas)`: the public class name of the `tf.distribute` strategy `model` trains
    under (None for none) and its number of replicas in sync (1 for none), refusing the
    strategies the capture cannot record (`kerasbp.logger.replicas.check_strategy`). Strategies
    are TensorFlow's: on the other backends `(None, 1)`, without importing TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return None, 1
    from kerasbp.logger import replicas  # tf.distribute glue: imports TensorFlow

    strategy = replicas.strategy_of(model)
    n_replicas = replicas.check_strategy(strategy)
    return replicas.strategy_name(strategy), n_replicas
