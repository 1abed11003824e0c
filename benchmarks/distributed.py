"""Logging overhead under data parallelism on N CPU devices: TensorFlow's `MirroredStrategy` or JAX's `DataParallel`.

Usage:
    python benchmarks/distributed.py                  # MirroredStrategy, 2 devices, 784-256-256-10, a few minutes on 2 cores
    python benchmarks/distributed.py --backend jax    # keras.distribution.DataParallel on 2 JAX host devices
    python benchmarks/distributed.py --backend jax --devices 1 --plain   # JAX on one device, no distribution
    python benchmarks/distributed.py --devices 4 --repeats 7 --json out.json
    python benchmarks/distributed.py --quick          # tiny sizes, to check that it runs

The method of `benchmarks/run.py` (section 2), with the network, data and paired rounds of
`benchmarks/paired.py`: a 784-256-256-10 Dense network on random data, batch 128; plain `fit`,
`fit` with `GradientLogger()` (statistics every step), with `GradientLogger(per_replica=True)`
(TensorFlow only: refused under JAX's DataParallel) and with
`GradientLogger(record="full", every_n_steps=50)`. After one warm-up run each (tracing), the
variants run in turn, round after round; each ratio is the median over rounds of the variant's
time over plain `fit`'s in the same round, which cancels the slow drifts of a shared machine;
the same for the process's CPU time.

`--backend tensorflow` makes N logical CPU devices and a `MirroredStrategy` over them, and each
model in its scope. `--backend jax` sets `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX starts, and
`keras.distribution.set_distribution(DataParallel(...))` before any model is made.

The devices share the machine's cores: the figures measure what the logger adds to a
data-parallel step, not a speed-up from the devices.
"""

import argparse
import contextlib
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow", help="tensorflow: MirroredStrategy; jax: DataParallel (default tensorflow)")
    parser.add_argument("--devices", type=int, default=2, help="CPU devices, one share of each batch each (default 2)")
    parser.add_argument("--plain", action="store_true", help="no strategy or distribution (one device, --devices 1), for comparison")
    parser.add_argument("--samples", type=int, default=10_000, help="random samples per epoch (default 10000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error(f"--devices must be a positive integer. Received: {args.devices}")
    if args.plain and args.devices != 1:
        parser.error(f"--plain trains on one device: pass --devices 1. Received: --devices {args.devices}")
    if args.quick:
        args.samples, args.repeats = 1024, 1
    return args


def tensorflow_setup(args):
    """`(scope, name, versions)`: a function giving the scope to make a model in (a
    `MirroredStrategy`'s over `args.devices` logical CPU devices), the setting's name, and the
    library versions."""
    import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
    import tensorflow as tf

    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * args.devices)
    if args.plain:
        return contextlib.nullcontext, "no strategy", {"tensorflow": tf.__version__}
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.devices)])
    return strategy.scope, f"MirroredStrategy, {strategy.num_replicas_in_sync} replicas", {"tensorflow": tf.__version__}


def jax_setup(args):
    """The same for JAX: `args.devices` host devices and, unless `args.plain`, `DataParallel`
    over them as the global distribution (the models need no scope)."""
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax
    import keras

    devices = jax.devices()
    if len(devices) != args.devices:
        raise SystemExit(f"JAX started with {len(devices)} devices, not --devices {args.devices} (was it imported before?)")
    if args.plain:
        return contextlib.nullcontext, "no distribution", {"jax": jax.__version__}
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return contextlib.nullcontext, f"DataParallel, {args.devices} host devices", {"jax": jax.__version__}


def main(argv=None):
    args = parse(argv)
    scope, setting, versions = (jax_setup if args.backend == "jax" else tensorflow_setup)(args)
    import keras

    import kerasbp as kb
    from paired import fit_runs, paired_rounds, summary, wide_data, wide_model

    def model_in_scope():
        with scope():
            return wide_model()

    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_per_replica_stats": lambda: kb.GradientLogger(per_replica=True),
        "fit_logger_full_every_50": lambda: kb.GradientLogger(record="full", every_n_steps=50),
    }
    if args.backend == "jax":
        del variants["fit_logger_per_replica_stats"]  # refused: the step sees only the reduced gradient
    X, y = wide_data(args.samples)
    times, cpu = paired_rounds(fit_runs(variants, X, y, args.epochs, make_model=model_in_scope), args.repeats, with_cpu=True)
    wall, cpu = summary(times, "fit"), summary(cpu, "fit")
    steps = args.epochs * -(-args.samples // 128)
    result = {
        "backend": args.backend,
        "setting": setting,
        "devices": args.devices,
        "steps_per_run": steps,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "versions": {"python": platform.python_version(), "keras": keras.__version__, **versions},
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
    print(f"{args.backend}: {setting}, 784-256-256-10, batch 128, {steps} steps per run, median of {args.repeats} rounds")
    for name, row in result["variants"].items():
        print(f"  {name:32s} {row['seconds']:8.3f} s  {row['ms_per_step']:7.2f} ms/step  x{row['ratio_to_fit']:.3f} of plain fit (CPU time x{row['cpu_ratio_to_fit']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
