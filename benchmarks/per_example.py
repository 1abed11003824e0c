"""The cost of per-example gradient statistics every step, against plain `fit`.

Usage:
    python benchmarks/per_example.py                  # 784-256-256-10, 20,000 samples, batch 128, 2 epochs
    python benchmarks/per_example.py --json out.json  # also write the figures as JSON
    python benchmarks/per_example.py --quick          # tiny sizes, to check that it runs

The method of `benchmarks/run.py` (table 2): plain `fit`, `fit` with `GradientLogger()` (the
per-variable statistics), and `fit` with `GradientLogger(per_example=True)` (also the norm,
inner-product and orthogonality tests, the mean GSNR, B_simple and the per-example norms) every
step and every 10th step, run in turn, round after round, after one warm-up run each (tracing);
each ratio is the median over rounds of the variant's time over plain `fit`'s in the same round,
which cancels the slow drifts of a shared machine's speed; the same for the process's CPU time
(all threads), which other processes' load disturbs less. The target is at most 1.5x plain `fit`
every step.

Why it costs what it does: per Dense layer `(n_in, n_out)` and batch `B`, the exact GSNR needs
`sum_i g_i^2` for every parameter, `B^2 (A*A)^T (D*D)`: one more `n_in x B x n_out` product, as
large as the layer's forward pass; and `g_i . g` needs `(A @ G) * D` or the examples' Gram
matrices, `min(B n_in n_out, B^2 (n_in + n_out))`. On 784-256-256-10 with batch 128 that is
about 60M multiply-adds beside the step's own 78M (forward and backward).
"""

import argparse
import json
import os
import platform
import sys

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import kerasbp as kb
import keras
from paired import fit_runs, paired_ratios, paired_rounds, summary, wide_data


def bench_per_example(n_samples, epochs, repeats, batch_size=128):
    """Paired rounds of plain `fit` and the two logged variants.

    Returns:
        dict `{variant: {"seconds": median wall seconds per run, "ratio_to_fit": median ratio,
        "ratios": the ratio of each round, "cpu_seconds", "cpu_ratio_to_fit": the same for the
        process's CPU time (all threads), steadier than wall time on a machine others load}}`.
    """
    X, y = wide_data(n_samples)
    variants = {
        "fit": None,
        "fit_logger_stats_every_step": lambda: kb.GradientLogger(),
        "fit_logger_per_example_every_step": lambda: kb.GradientLogger(per_example=True),
        "fit_logger_per_example_every_10": lambda: kb.GradientLogger(per_example=True, every_n_steps=10),
    }
    runs = fit_runs(variants, X, y, epochs, batch_size=batch_size)
    times, cpu = paired_rounds(runs, repeats, with_cpu=True)
    out = summary(times, "fit")
    cpu_summary = summary(cpu, "fit")
    for name, ratios in paired_ratios(times, "fit").items():
        out[name] |= {"ratios": ratios, "cpu_seconds": cpu_summary[name]["seconds"], "cpu_ratio_to_fit": cpu_summary[name]["ratio_to_fit"]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the benchmark runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, quick 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 7)
    sizes = dict(n_samples=512, epochs=1) if args.quick else dict(n_samples=20_000, epochs=2)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, keras {keras.__version__}"
    results = {"machine": machine, "repeats": repeats, "sizes": sizes}
    results["per_example"] = bench_per_example(sizes["n_samples"], sizes["epochs"], repeats)
    print(f"Per-example statistics every step: 784-256-256-10, {sizes['n_samples']} samples, batch 128, {sizes['epochs']} epochs ({machine})")
    print(f"   {'':36}{'seconds':>10}{'x fit':>10}{'CPU s':>10}{'CPU x fit':>10}   wall ratios per round")
    for name, r in results["per_example"].items():
        ratios = " ".join(f"{x:.2f}" for x in r["ratios"])
        print(f"   {name:36}{r['seconds']:10.3f}{r['ratio_to_fit']:10.3f}{r['cpu_seconds']:10.3f}{r['cpu_ratio_to_fit']:10.3f}   {ratios}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
