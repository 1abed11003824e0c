"""Cost of `kb.HessianProbe` inside `fit`: a 784-256-256-10 Dense network, batch 128.

Usage:
    python benchmarks/curvature.py                  # the full benchmark (a few minutes on 2 cores)
    python benchmarks/curvature.py --json out.json  # also write the figures as JSON
    python benchmarks/curvature.py --quick          # tiny sizes, to check that it runs

Variants, each a `model.fit` of the same data on its own model: plain `fit`; `fit` with a probe
every 100 steps with 20 power iterations and the default 10 Hutchinson probes (the issue's
target: at most 1.3x plain `fit`); the same without the trace (`n_probes=0`). After one warm-up
run each (tracing), the variants run in turn, round after round, and each ratio is the median
over rounds of the variant's time over plain `fit`'s in the same round (the method of
`benchmarks/run.py`), which cancels the slow drifts of a shared machine's speed.

It measures the backend Keras runs on (`KERAS_BACKEND=jax python benchmarks/curvature.py` for
JAX's, and torch's likewise).

A probe every 100 steps adds a few percent, less than the noise of whole runs on a shared machine,
so a second figure measures one probe's cost directly: `fit` with a probe at every step against
plain `fit` on 20 steps, in paired rounds; the cost of a probe every 100 steps follows from it.
"""

import argparse
import json
import platform
import statistics

import kerasbp.native_logs  # noqa: F401  (first: TensorFlow starts without its native log lines)
import kerasbp as kb
from paired import paired_ratios, paired_rounds, summary, wide_data, wide_model


def bench_probe(n_samples, epochs, repeats, every_n_steps=100, n_iterations=20):
    """Seconds per run and paired ratios to plain `fit` (see the module docstring)."""
    X, y = wide_data(n_samples)
    variants = {
        "fit": None,
        "fit_probe_every_100": lambda: kb.HessianProbe(every_n_steps=every_n_steps, n_iterations=n_iterations),
        "fit_probe_every_100_no_trace": lambda: kb.HessianProbe(every_n_steps=every_n_steps, n_iterations=n_iterations, n_probes=0),
    }
    runs, probes = {}, {}
    for name, make in variants.items():
        model = wide_model()
        callbacks = [make()] if make else []
        probes[name] = callbacks
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=epochs, batch_size=128, callbacks=callbacks, verbose=0)
    times = paired_rounds(runs, repeats)
    steps = epochs * -(-n_samples // 128)
    out = summary(times, "fit")
    for name, ratios in paired_ratios(times, "fit").items():
        out[name]["ratios"] = ratios
    probe = probes["fit_probe_every_100"][0]
    out["probed_steps_per_run"] = int(len(probe.steps) // (repeats + 1))
    out["steps_per_run"] = steps
    out["last_lambda_max"] = float(probe.lambda_max[-1])
    out["last_trace"] = float(probe.trace[-1])
    return out


def bench_probe_cost(n_steps, repeats, n_iterations=20):
    """The cost of one probe, from `fit` with a probe at every step against plain `fit` over the same
    `n_steps` steps (paired rounds): the per-step difference is one probe's cost, far above the
    machine's noise, and `1 + (ratio - 1) / 100` is the cost of a probe every 100 steps it implies."""
    X, y = wide_data(128 * n_steps, seed=1)
    runs = {}
    for name, probe in (("fit", None), ("fit_probe_every_step", kb.HessianProbe(every_n_steps=1, n_iterations=n_iterations))):
        model = wide_model()
        callbacks = [probe] if probe else []
        runs[name] = lambda model=model, callbacks=callbacks: model.fit(X, y, epochs=1, batch_size=128, callbacks=callbacks, verbose=0)
    times = paired_rounds(runs, repeats)
    ratio = statistics.median(a / b for a, b in zip(times["fit_probe_every_step"], times["fit"], strict=True))
    step = statistics.median(times["fit"]) / n_steps
    return {
        "step_ms": 1e3 * step,
        "probe_ms": 1e3 * (ratio - 1) * step,
        "ratio_probe_every_step": ratio,
        "implied_ratio_every_100": 1 + (ratio - 1) / 100,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 1)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    n_samples, epochs = (128 * 20, 1) if args.quick else (128 * 400, 1)
    every = 10 if args.quick else 100
    result = {"machine": platform.processor() or platform.machine(), "overhead": bench_probe(n_samples, epochs, repeats, every_n_steps=every)}
    r = result["overhead"]
    print(f"784-256-256-10, batch 128, {r['steps_per_run']} steps per run, a probe every {every} steps ({r['probed_steps_per_run']} per run), 20 iterations")
    for name in ("fit", "fit_probe_every_100", "fit_probe_every_100_no_trace"):
        print(f"  {name:32s} {r[name]['seconds']:7.2f} s   x{r[name]['ratio_to_fit']:.3f} (median of paired ratios {['%.3f' % v for v in r[name]['ratios']]})")
    cost = result["probe_cost"] = bench_probe_cost(5 if args.quick else 20, repeats)
    print(
        f"  one probe (20 iterations, 10 Hutchinson probes): {cost['probe_ms']:.0f} ms = {cost['probe_ms'] / cost['step_ms']:.1f} train steps "
        f"of {cost['step_ms']:.1f} ms; implied cost of a probe every 100 steps: x{cost['implied_ratio_every_100']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
