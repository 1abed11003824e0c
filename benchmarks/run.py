"""Speed and memory of kerasbp's training fast path and of gradient logging.

Usage:
    python benchmarks/run.py                    # the full benchmark (a few minutes on 2 cores)
    python benchmarks/run.py --json out.json    # also write the figures as JSON
    python benchmarks/run.py --quick            # tiny sizes, to check that it runs

Every figure is the median of `--repeats` timed runs after one warm-up run; ratios are computed
from runs in the same process.

1. XOR 2-4-1, full-batch SGD steps: the NumPy twin; Keras `fit` with one epoch per step (timed
   over 200 epochs, reported per step); `kerasbp.train` without and with `GradientLogger` stats
   every step. Microseconds per step and ratios to the NumPy twin. On the Keras backend the
   process runs (`KERAS_BACKEND=jax python benchmarks/run.py` measures JAX's, and torch's
   likewise), as do tables 2-4; table 5 measures TensorFlow and runs on it only
   (`benchmarks/in_step.py`), so the others run where TensorFlow is not installed.
2. Logging overhead on a 784-256-256-10 Dense network, 20,000 random samples, batch 128, 2 epochs:
   plain `fit`, `fit` with `GradientLogger` stats every step, and with full recording every 50
   steps. The three run in turn, round after round; each ratio is the median over rounds of the
   variant's time over plain `fit`'s in the same round.
3. Memory: `record="full"` streamed to disk for 500 steps of a model with about one million
   parameters: growth of the peak resident memory of the process.
4. Time to result: what a user waits for, each row timed as a user meets it (first calls
   included, not only the steady state), beside the NumPy twin's whole run of 1000 XOR epochs.
   The first run of a fresh process and the scripts are timed in subprocesses.
5. In-step cost of the statistics: a compiled loop of optimizer updates on 784-256-256-10 (the
   gradients change from update to update), with and without the logger's capture attached, in turn round after round; the
   cost is the median over rounds of the difference per update. This isolates what the logger
   adds to a step from the noise of whole `fit` runs. The "floor" column, timed in the same
   rounds, is what only the five reductions per variable that the statistics need add in a
   TensorFlow graph, each its own kernel and pass over memory (a graph cannot fuse them; XLA
   can, but its CPU reductions are slower still: row "SGD, XLA").
6. On JAX and torch, the same question one train step at a time (`benchmarks/step_floor.py`):
   `fit`'s own train step of 784-256-256-10 (batch 128, SGD), the step with only the bare
   reductions the statistics need (floor), and the step with a `GradientLogger`, each step timed
   to its end and the three in turn; medians, and medians of the per-turn ratios to the step.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import kerasbp as kb
import keras
import numpy as np
from kerasbp.reference import SGD, NumpyMLP
import step_floor
from paired import fit_runs, paired_rounds, summary, timed, wide_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def bench_overhead(n_samples, epochs, repeats):
    """Plain fit against fit with loggers, in paired rounds (`paired.py`)."""
    X, y = wide_data(n_samples)
    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_stats_every_4": lambda: kb.GradientLogger(every_n_steps=4),
        "fit_logger_full_every_50": lambda: kb.GradientLogger(record="full", every_n_steps=50),
    }
    runs = fit_runs(variants, X, y, epochs)
    return summary(paired_rounds(runs, repeats), "fit")


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
        on_disk = sum(os.path.getsize(os.path.join(folder, "grads", f)) for f in os.listdir(os.path.join(folder, "grads")) if f.endswith(".bin"))
        assert len(logger.steps) == steps
    return {"parameters": n_params, "steps": steps, "peak_rss_growth_mb": after - before, "rss_growth_mb": rss_after - rss_before, "streamed_mb": on_disk / 2**20}


def subprocess_seconds(args):
    """Wall time of a Python subprocess run to its end, and its exit status."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, proc.returncode


FIRST_RUN = """
import time
start = time.perf_counter()
import kerasbp as kb
X, y = kb.xor_data()
model = kb.compile_model(kb.xor_model(seed=0), "sgd", learning_rate=0.5)
kb.train(model, X, y, epochs={epochs}, batch_size=4, callbacks=[kb.GradientLogger()])
print(time.perf_counter() - start)
"""


def bench_time_to_result(epochs, repeats):
    """Each row of a user's session, as medians over `repeats` fresh rounds (row names say what)."""
    X, y = kb.xor_data()

    def model():
        return kb.compile_model(kb.xor_model(seed=0), "sgd", learning_rate=0.5)

    twin = NumpyMLP.from_keras(model())
    twin_start = twin.params

    def numpy_run():
        twin.set_params(twin_start)
        twin.fit(X, y, SGD(learning_rate=0.5), epochs=epochs, batch_size=4, loss="mse")

    kb.train(model(), X, y, epochs=epochs, batch_size=4, callbacks=[kb.GradientLogger()])  # this process has trained once
    rows = {name: [] for name in ("numpy_twin_fit", "fresh_model_and_logger", "same_model_new_logger_epochs_plus_1", "same_model_xla", "steady_state", "fresh_model_fit")}
    for _ in range(repeats):
        rows["numpy_twin_fit"].append(timed(numpy_run))
        m = model()
        rows["fresh_model_and_logger"].append(timed(lambda: kb.train(m, X, y, epochs=epochs, batch_size=4, callbacks=[kb.GradientLogger()])))
        rows["same_model_new_logger_epochs_plus_1"].append(timed(lambda: kb.train(m, X, y, epochs=epochs + 1, batch_size=4, callbacks=[kb.GradientLogger()])))
        logger = kb.GradientLogger()
        for _ in range(2):
            kb.train(m, X, y, epochs=epochs, batch_size=4, callbacks=[logger])
        rows["steady_state"].append(timed(lambda: kb.train(m, X, y, epochs=epochs, batch_size=4, callbacks=[logger])))
        rows["same_model_xla"].append(timed(lambda: kb.train(m, X, y, epochs=epochs, batch_size=4, callbacks=[logger], jit_compile=True)))
        f = model()
        fit_epochs = max(1, epochs // 20)
        rows["fresh_model_fit"].append(timed(lambda: f.fit(X, y, epochs=fit_epochs, batch_size=4, verbose=0)) * epochs / fit_epochs)
    first = [float(subprocess.run([sys.executable, "-c", FIRST_RUN.format(epochs=epochs)], capture_output=True, text=True, cwd=ROOT).stdout.split()[-1]) for _ in range(max(1, repeats // 2))]
    out = {name: statistics.median(t) for name, t in rows.items()}
    out["first_run_in_a_fresh_process"] = statistics.median(first)
    out["train_xor_script_help"] = statistics.median(subprocess_seconds(["scripts/train_xor.py", "--help"])[0] for _ in range(3))
    out["train_xor_script"] = subprocess_seconds(["scripts/train_xor.py", "--epochs", str(epochs)])[0]
    base = out["numpy_twin_fit"]
    return {name: {"seconds": s, "ratio_to_numpy_twin": s / base} for name, s in out.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the benchmark runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 5, quick 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    if args.quick:
        sizes = dict(steps=200, fit_epochs=5, n_samples=512, epochs=1, memory_steps=20, ttr_epochs=100, updates=20, floor_steps=20)
    else:
        sizes = dict(steps=10_000, fit_epochs=200, n_samples=20_000, epochs=2, memory_steps=500, ttr_epochs=1000, updates=500, floor_steps=1000)
    backend = keras.backend.backend()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, keras {keras.__version__} on {backend}"
    results = {"machine": machine, "backend": backend, "repeats": repeats, "sizes": sizes}

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

    results["time_to_result"] = bench_time_to_result(sizes["ttr_epochs"], repeats)
    print(f"4. Time to result, XOR 2-4-1, {sizes['ttr_epochs']} full-batch SGD epochs with a GradientLogger (kerasbp.train unless named)")
    print(f"   {'':40}{'seconds':>10}{'x twin':>10}")
    for name, r in results["time_to_result"].items():
        print(f"   {name:40}{r['seconds']:10.3f}{r['ratio_to_numpy_twin']:10.2f}")

    if backend != "tensorflow":
        print(f"   (table 5 measures TensorFlow's graph executor: run it without KERAS_BACKEND={backend})")
        results["step_floor"] = c = step_floor.bench_step_floor(sizes["floor_steps"], kb.GradientLogger)
        print(f"6. One train step of 784-256-256-10 on {backend}, {sizes['floor_steps']} of each in turn, median microseconds")
        print(f"   {'':26}{'step':>8}{'floor':>8}{'logged':>8}{'x floor':>9}{'x logged':>10}")
        print(f"   {'SGD, batch 128':26}{c['step_us']:8.0f}{c['floor_us']:8.0f}{c['logged_us']:8.0f}{c['floor_ratio']:9.3f}{c['logged_ratio']:10.3f}")
        return _write_json(args.json, results)

    import in_step  # TensorFlow's own loop: imported on its backend only, where TensorFlow is installed

    print("5. One optimizer update on 784-256-256-10 with and without the logger's statistics, in microseconds")
    print(f"   {'':26}{'update':>8}{'logged':>8}{'added':>8}{'/update':>9}{'floor':>8}")
    for key, optimizer, jit in (("in_step_cost", "SGD", False), ("in_step_cost_adam", "Adam", False), ("in_step_cost_xla", "SGD", True)):
        results[key] = c = in_step.bench_in_step_cost(sizes["updates"], repeats, jit_compile=jit, optimizer=optimizer)
        name = f"{optimizer}, {'XLA' if jit else 'tf.function graph'}"
        floor = f"{c['floor_added_us']:8.0f}" if "floor_added_us" in c else f"{'-':>8}"
        print(f"   {name:26}{c['update_us']:8.0f}{c['logged_update_us']:8.0f}{c['added_us']:8.0f}{c['added_us'] / c['update_us']:9.2f}{floor}")

    return _write_json(args.json, results)


def _write_json(path, results):
    """Write `results` to `path` when given; returns 0, the exit status."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
