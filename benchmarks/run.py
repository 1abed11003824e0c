"""Speed and memory of kerasbp's training fast path and of gradient logging.

Usage:
    python benchmarks/run.py                    # the full benchmark (a few minutes on 2 cores)
    python benchmarks/run.py --json out.json    # also write the figures as JSON
    python benchmarks/run.py --quick            # tiny sizes, to check that it runs

Every figure is the median of `--repeats` timed runs after one warm-up run; ratios are computed
from runs in the same process.

1. XOR 2-4-1, full-batch SGD steps: the NumPy twin; Keras `fit` with one epoch per step (timed
   over 200 epochs, reported per step); `kerasbp.train` without and with `GradientLogger` stats
   every step. Microseconds per step and ratios to the NumPy twin.
2. Logging overhead on a 784-256-256-10 Dense network, 20,000 random samples, batch 128, 2 epochs:
   plain `fit`, `fit` with `GradientLogger` stats every step, and with full recording every 50
   steps. The three run in turn, round after round; each ratio is the median over rounds of the
   variant's time over plain `fit`'s in the same round.
3. Memory: `record="full"` streamed to disk for 500 steps of a model with about one million
   parameters: growth of the peak resident memory of the process.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import kerasbp as kb
import keras
import numpy as np
from kerasbp.reference import SGD, NumpyMLP


def median_time(run, repeats):
    """Run once to warm up, then `repeats` times; return the median wall time in seconds."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_xor(steps, fit_epochs, repeats):
    X, y = kb.xor_data()
    lr = 0.5

    def model():
        return kb.compile_model(kb.xor_model(seed=0), "sgd", learning_rate=lr)

    twin = NumpyMLP.from_keras(model())
    twin_start = twin.params
    opt = SGD(learning_rate=lr)

    def numpy_run():
        twin.set_params(twin_start)
        twin.fit(X, y, opt, epochs=steps, batch_size=4, loss="mse")

    fit_model = model()
    fast_model = model()
    logged_model = model()
    logger = kb.GradientLogger()
    seconds = {
        "numpy_twin": median_time(numpy_run, repeats) / steps,
        "keras_fit_epoch_per_step": median_time(lambda: fit_model.fit(X, y, epochs=fit_epochs, batch_size=4, verbose=0), repeats) / fit_epochs,
        "kerasbp_train": median_time(lambda: kb.train(fast_model, X, y, epochs=steps, batch_size=4), repeats) / steps,
        "kerasbp_train_logger_stats": median_time(lambda: kb.train(logged_model, X, y, epochs=steps, batch_size=4, callbacks=[logger]), repeats) / steps,
    }
    assert len(logger.steps) == (repeats + 1) * steps  # every step was logged
    base = seconds["numpy_twin"]
    return {name: {"us_per_step": s * 1e6, "ratio_to_numpy": s / base} for name, s in seconds.items()}


def wide_model():
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def bench_overhead(n_samples, epochs, repeats):
    """Plain fit against fit with loggers. The variants run in turn, round after round, and each
    ratio is the median over rounds of (variant / plain fit of the same round), which cancels
    the slow drifts of a shared machine's speed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, 784)).astype("float32")
    y = rng.integers(0, 10, size=(n_samples, 1))
    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_full_every_50": lambda: kb.GradientLogger(record="full", every_n_steps=50),
    }
    runs = {}
    for name, make_logger in variants.items():
        model = wide_model()
        callbacks = [make_logger()] if make_logger else []
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=epochs, batch_size=128, callbacks=callbacks, verbose=0)
        runs[name]()  # warm-up: tracing
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "seconds": statistics.median(t),
            "ratio_to_fit": statistics.median(a / b for a, b in zip(t, times["fit"], strict=True)),
        }
        for name, t in times.items()
    }


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def rss_mb():
    with open("/proc/self/statm") as f:  # Linux: pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_memory(steps):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32 * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(32 * steps, 1))
    with tempfile.TemporaryDirectory() as folder:
        warm = kb.GradientLogger(record="full", path=os.path.join(folder, "warm"))
        model.fit(X[:64], y[:64], epochs=1, batch_size=32, callbacks=[warm], verbose=0)  # allocate TF's own buffers
        before, rss_before = peak_rss_mb(), rss_mb()
        logger = kb.GradientLogger(record="full", path=os.path.join(folder, "grads"))
        model.fit(X, y, epochs=1, batch_size=32, callbacks=[logger], verbose=0)
        after, rss_after = peak_rss_mb(), rss_mb()
        on_disk = sum(os.path.getsize(os.path.join(folder, "grads", f)) for f in os.listdir(os.path.join(folder, "grads")))
        assert len(logger.steps) == steps
    return {"parameters": n_params, "steps": steps, "peak_rss_growth_mb": after - before, "rss_growth_mb": rss_after - rss_before, "streamed_mb": on_disk / 2**20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the benchmark runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 5, quick 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    sizes = dict(steps=200, fit_epochs=5, n_samples=512, epochs=1, memory_steps=20) if args.quick else dict(steps=10_000, fit_epochs=200, n_samples=20_000, epochs=2, memory_steps=500)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, keras {keras.__version__}"
    results = {"machine": machine, "repeats": repeats, "sizes": sizes}

    results["xor"] = bench_xor(sizes["steps"], sizes["fit_epochs"], repeats)
    print(f"1. XOR 2-4-1, {sizes['steps']} full-batch SGD steps ({machine})")
    print(f"   {'':32}{'us/step':>10}{'x numpy':>10}")
    for name, r in results["xor"].items():
        print(f"   {name:32}{r['us_per_step']:10.1f}{r['ratio_to_numpy']:10.2f}")

    results["overhead"] = bench_overhead(sizes["n_samples"], sizes["epochs"], repeats)
    print(f"2. 784-256-256-10, {sizes['n_samples']} samples, batch 128, {sizes['epochs']} epochs")
    print(f"   {'':32}{'seconds':>10}{'x fit':>10}")
    for name, r in results["overhead"].items():
        print(f"   {name:32}{r['seconds']:10.3f}{r['ratio_to_fit']:10.3f}")

    results["memory"] = bench_memory(sizes["memory_steps"])
    m = results["memory"]
    print(f"3. record='full' streamed to disk, {m['steps']} steps of {m['parameters']:,} parameters")
    print(f"   peak RSS growth {m['peak_rss_growth_mb']:.1f} MB (RSS {m['rss_growth_mb']:+.1f} MB) while streaming {m['streamed_mb']:.0f} MB")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
