"""How long `scripts/train_xor.py` takes to stop after Ctrl-C or SIGTERM, at several moments.

Usage:
    python benchmarks/stop_delays.py                 # 5 runs per moment
    python benchmarks/stop_delays.py --repeats 10

Each run starts `train_xor.py --epochs 2000000 --log-gradients <tmp>/run.npz` in a subprocess,
waits for the moment (the logger's sidecar folder exists: tracing; its first or third chunk:
early or late training), sends the signal, and times until the process has exited (its log
written). Prints the median and the largest delay per moment, in seconds.
"""

import argparse
import glob
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "train_xor.py")

#: moment -> (the signal, a function of the log path that is true once the moment has come)
MOMENTS = {
    "tracing (SIGINT)": (signal.SIGINT, lambda log: os.path.isdir(log + ".partial")),
    "early training (SIGINT)": (signal.SIGINT, lambda log: len(glob.glob(log + ".partial/chunk-*.npz")) >= 1),
    "late training (SIGINT)": (signal.SIGINT, lambda log: len(glob.glob(log + ".partial/chunk-*.npz")) >= 3),
    "early training (SIGTERM)": (signal.SIGTERM, lambda log: len(glob.glob(log + ".partial/chunk-*.npz")) >= 1),
}


def stop_delay(sig, ready, timeout=180):
    """Seconds from sending `sig` to the script's exit, once `ready(log)` holds."""
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "run.npz")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.Popen([sys.executable, SCRIPT, "--epochs", "2000000", "--log-gradients", log], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not ready(log):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"the run never reached its moment (exit status {proc.poll()})")
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
        return time.monotonic() - sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per moment (default: 5)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"{'moment':<26} {'median s':>9} {'max s':>7}")
    for name, (sig, ready) in MOMENTS.items():
        delays = [stop_delay(sig, ready) for _ in range(args.repeats)]
        print(f"{name:<26} {statistics.median(delays):9.2f} {max(delays):7.2f}")


if __name__ == "__main__":
    main()
