"""Logging overhead under `tf.distribute.MirroredStrategy` on N logical CPU devices.

Usage:
    python benchmarks/distributed.py                  # 2 devices, 784-256-256-10, a few minutes on 2 cores
    python benchmarks/distributed.py --devices 4 --repeats 7 --json out.json
    python benchmarks/distributed.py --quick          # tiny sizes, to check that it runs

The method of `benchmarks/run.py` (section 2): a 784-256-256-10 Dense network on random data,
batch 128, made and compiled in the strategy's scope; plain `fit` under the strategy, `fit` with
`GradientLogger()` (statistics every step), with `GradientLogger(per_replica=True)` and with
`GradientLogger(record="full", every_n_steps=50)`. After one warm-up run each (tracing), the
variants run in turn, round after round; each ratio is the median over rounds of the variant's
time over plain `fit`'s in the same round, which cancels the slow drifts of a shared machine.

Logical CPU devices share the machine's cores: the figures measure what the logger adds to a
data-parallel step, not a speed-up from the devices.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import kerasbp.native_logs  # noqa: F401,E402  (first: TensorFlow starts without its native log lines)
import tensorflow as tf  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="logical CPU devices, one replica each (default 2)")
    parser.add_argument("--samples", type=int, default=10_000, help="random samples per epoch (default 10000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error(f"--devices must be a positive integer. Received: {args.devices}")
    if args.quick:
        args.samples, args.repeats = 1024, 1
    return args


def main(argv=None):
    args = parse(argv)
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * args.devices)
    import keras
    import numpy as np

    import kerasbp as kb

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.devices)])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.samples, 784)).astype("float32")
    y = rng.integers(0, 10, size=(args.samples, 1))

    def wide_model():
        with strategy.scope():
            model = keras.Sequential(
                [keras.Input((784,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
            )
            model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_per_replica_stats": lambda: kb.GradientLogger(per_replica=True),
        "fit_logger_full_every_50": lambda: kb.GradientLogger(record="full", every_n_steps=50),
    }
    runs = {}
    for name, make_logger in variants.items():
        model = wide_model()
        callbacks = [make_logger()] if make_logger else []
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=args.epochs, batch_size=128, callbacks=callbacks, verbose=0)
        runs[name]()  # warm-up: tracing
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    steps = args.epochs * -(-args.samples // 128)
    result = {
        "devices": args.devices,
        "replicas": strategy.num_replicas_in_sync,
        "steps_per_run": steps,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
        "variants": {
            name: {
                "seconds": statistics.median(t),
                "ms_per_step": statistics.median(t) / steps * 1e3,
                "ratio_to_fit": statistics.median(a / b for a, b in zip(t, times["fit"], strict=True)),
            }
            for name, t in times.items()
        },
    }
    print(f"MirroredStrategy, {args.devices} logical CPU devices, 784-256-256-10, batch 128, {steps} steps per run, median of {args.repeats} rounds")
    for name, row in result["variants"].items():
        print(f"  {name:32s} {row['seconds']:8.3f} s  {row['ms_per_step']:7.2f} ms/step  x{row['ratio_to_fit']:.3f} of plain fit")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
