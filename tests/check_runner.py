"""Checks that run in a process of their own, because the devices are fixed when the process
starts (TensorFlow's logical CPU devices, JAX's forced host devices): the checks script calls
`report`, its test module calls `run_script` once and asserts each check's result.

A script imports this module from the folder it lies in or, under `tests/backends/`, from the
folder above (`sys.path`).
"""

import json
import os
import subprocess
import sys
import traceback

from kerasbp.reference import NumpyMLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def report(checks, argv):
    """Run the checks named in `argv[1:]` (all of `checks` when none is named) and write, after
    each, `{name: "ok" or the failure's traceback}` as JSON to the file `argv[0]`, so that a
    run killed for time still reports the checks it finished.

    Args:
        checks: dict name -> function of no argument that raises when the check fails.
        argv: list of str, the script's arguments.

    Returns:
        int, 0 (the exit status: the results are in the file).
    """
    out, names = argv[0], argv[1:] or list(checks)
    results = {}
    for name in names:
        try:
            checks[name]()
            results[name] = "ok"
        except Exception:  # noqa: BLE001  (reported to the test, which fails with it)
            results[name] = traceback.format_exc()
        with open(out, "w") as f:
            json.dump(results, f)
    return 0


def run_script(script, out, names, timeout_s, env=None):
    """Run `python script out *names` with this checkout first on `PYTHONPATH`, bounded in time.

    Args:
        script: str, path of a checks script that calls `report`.
        out: path of the JSON file it writes.
        names: list of str, the checks to run.
        timeout_s: seconds the process may take before it is killed.
        env: dict of environment variables to set on top of this process's, or None.

    Returns:
        `(results, tail)`: the dict the script wrote (empty if it wrote none) and the end of its
        stderr (or the timeout), for the failure message of a check it did not report.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    try:
        done = subprocess.run([sys.executable, script, str(out), *names], env=env, capture_output=True, text=True, timeout=timeout_s)
        tail = done.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        tail = f"timed out after {timeout_s} s: {(e.stderr or b'')[-3000:]!r}"
    if not os.path.exists(out):
        return {}, tail
    with open(out) as f:
        return json.load(f), tail


def assert_ok(run, check):
    """Assert that the checks' process (`run`: what `run_script` returned) reported `check` as "ok"."""
    results, tail = run
    assert check in results, f"the checks' process did not report {check!r}:\n{tail}"
    assert results[check] == "ok", results[check]


def twin_steps(model, logger, X, y, batch, loss="mse"):
    """Per logged step (`shuffle=False`, snapshots): the twin's `(loss, gradient of the batch,
    gradients of each device's half times 1/2, batch size)` at the weights Keras had before that
    step. The halves are split as `tf.distribute` splits a batch (the first replica gets the
    larger half); JAX's `DataParallel` needs even batches, where the two agree."""
    twin = NumpyMLP.from_keras(model).astype("float64")
    X, y = X.astype("float64"), y.astype("float64")
    starts = list(range(0, len(X), batch))
    out = []
    for k, step in enumerate(logger.steps):
        start = starts[step % len(starts)]
        Xb, yb = X[start : start + batch], y[start : start + batch]
        twin.set_params([w[k].astype("float64") for w in logger.weights()])
        value, grads = twin.gradients(Xb, yb, loss)
        half = (len(Xb) + 1) // 2
        parts = [twin.gradients(Xb[s], yb[s], loss)[1] for s in (slice(0, half), slice(half, None))]
        out.append((float(value), grads, [[g / 2 for g in p] for p in parts], len(Xb)))
    return out
