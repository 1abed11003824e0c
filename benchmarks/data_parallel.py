"""Logging overhead under `keras.distribution.DataParallel` on JAX with N host devices.

Usage:
    python benchmarks/data_parallel.py                  # 2 devices, 784-256-256-10, a few minutes on 2 cores
    python benchmarks/data_parallel.py --devices 4 --repeats 9 --json out.json
    python benchmarks/data_parallel.py --quick          # tiny sizes, to check that it runs

The JAX sibling of `benchmarks/distributed.py` (MirroredStrategy on TensorFlow). It sets
`KERAS_BACKEND=jax` and `XLA_FLAGS=--xla_force_host_platform_device_count=N` itself, before JAX
starts, and `keras.distribution.set_distribution(DataParallel(...))` before any model is made.
The network, data and paired rounds are those of `benchmarks/paired.py`: the 784-256-256-10
relu net on random data, batch 128; plain `fit`, `fit` with `GradientLogger()` (statistics every
step) and with `GradientLogger(record="full", every_n_steps=50)`, run in turn, round after round,
after one warm-up run each (compiling); each ratio is the median over rounds of the variant's
time over plain `fit`'s in the same round, for wall time and for the process's CPU time.

Host devices share the machine's cores: the figures measure what the logger adds to a
data-parallel step, not a speed-up from the devices.
"""

import argparse
import json
import os
import platform
import sys


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="host devices, one shard of the batch each (default 2)")
    parser.add_argument("--samples", type=int, default=10_000, help="random samples per epoch (default 10000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    parser.add_argument("--plain", action="store_true", help="no keras.distribution (one device, --devices 1), for comparison")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error(f"--devices must be a positive integer. Received: {args.devices}")
    if args.plain and args.devices != 1:
        parser.error(f"--plain trains on one device: pass --devices 1. Received: --devices {args.devices}")
    if args.quick:
        args.samples, args.repeats = 1024, 1
    return args


def main(argv=None):
    args = parse(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax
    import keras

    import kerasbp as kb
    from paired import paired_rounds, summary, wide_data, wide_model

    devices = jax.devices()
    if len(devices) != args.devices:
        raise SystemExit(f"JAX started with {len(devices)} devices, not --devices {args.devices} (was it imported before?)")
    if not args.plain:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    X, y = wide_data(args.samples)
    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_full_every_50": lambda: kb.GradientLogger(record="full", every_n_steps=50),
    }
    runs = {}
    for name, make_logger in variants.items():
        model = wide_model()
        callbacks = [make_logger()] if make_logger else []
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=args.epochs, batch_size=128, callbacks=callbacks, verbose=0)
    times, cpu = paired_rounds(runs, args.repeats, with_cpu=True)
    wall, cpu = summary(times, "fit"), summary(cpu, "fit")
    steps = args.epochs * -(-args.samples // 128)
    result = {
        "devices": args.devices,
        "distribution": None if args.plain else "DataParallel",
        "steps_per_run": steps,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "keras": keras.__version__},
        "variants": {
            name: {
                "seconds": row["seconds"],
                "ms_per_step": row["seconds"] / steps * 1e3,
                "ratio_to_fit": row["ratio_to_fit"],
                "cpu_ratio_to_fit": cpu[name]["ratio_to_fit"],
            }
            for name, row in wall.items()
        },
    }
    print(f"JAX {'without distribution' if args.plain else 'DataParallel'}, {args.devices} host devices, 784-256-256-10, batch 128, {steps} steps per run, median of {args.repeats} rounds")
    for name, row in result["variants"].items():
        print(f"  {name:30s} {row['seconds']:8.3f} s  {row['ms_per_step']:7.2f} ms/step  x{row['ratio_to_fit']:.3f} of plain fit (CPU time x{row['cpu_ratio_to_fit']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
