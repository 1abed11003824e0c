"""What the benchmarks share: the 784-256-256-10 network, its random data, and paired rounds.

Paired rounds: every variant runs once to warm up (tracing), then the variants run in turn,
round after round. A variant's ratio is the median over rounds of its time over the base
variant's time in the same round, which cancels the slow drifts of a shared machine's speed.
"""

import statistics
import time

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import keras
import numpy as np


def wide_model():
    """A compiled 784-256-256-10 relu network (SGD 0.01, sparse cross-entropy from logits)."""
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def wide_data(n_samples, seed=0):
    """`(X, y)`: float32 normal inputs `(n_samples, 784)` and integer labels `(n_samples, 1)` in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_samples, 784)).astype("float32"), rng.integers(0, 10, size=(n_samples, 1))


def fit_runs(variants, X, y, epochs, make_model=wide_model, batch_size=128):
    """dict name -> a callable that runs `model.fit` once on `(X, y)` without progress output:
    each variant's own model from `make_model()` and, unless its entry in `variants` (dict name ->
    a function of no argument that makes a callback, or None) is None, its own callback."""
    runs = {}
    for name, make_callback in variants.items():
        model = make_model()
        callbacks = [make_callback()] if make_callback else []
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks, verbose=0)
    return runs


def timed(run):
    """Wall time of one call of `run()` in seconds."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def rotated(names, turn):
    """`names` (a list) starting from its `turn`-th entry, modulo its length: run in this order
    at each turn, every entry takes every place in the order equally often."""
    k = turn % len(names)
    return names[k:] + names[:k]


def paired_rounds(runs, repeats, with_cpu=False):
    """Time `runs` (dict name -> callable) in paired rounds; return dict name -> list of wall
    seconds, and with `with_cpu` also the same for the process's CPU time (all threads), which
    is steadier than wall time on a machine others load: `(wall, cpu)`. Each round starts one
    variant later than the last (round r runs them from the r-th on): whichever place in a
    round is slower, every variant takes it equally often over `len(runs)` rounds (`rotated`)."""
    for run in runs.values():
        run()  # warm-up: tracing
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for r in range(repeats):
        for name in rotated(list(runs), r):
            run = runs[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return (times, cpu) if with_cpu else times


def paired_ratios(times, base):
    """dict name -> the per-round ratios of each variant's time to `base`'s."""
    return {name: [a / b for a, b in zip(t, times[base], strict=True)] for name, t in times.items()}


def summary(times, base):
    """dict name -> {"seconds": median time, "ratio_to_<base>": median of the paired ratios}."""
    ratios = paired_ratios(times, base)
    return {name: {"seconds": statistics.median(t), f"ratio_to_{base}": statistics.median(ratios[name])} for name, t in times.items()}
