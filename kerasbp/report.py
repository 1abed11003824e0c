"""Saved gradient logs for people: the formats the scripts save, and a one-page HTML report.

`LOG_FORMATS` names what `--log-gradients PATH` (and `kerasbp.jobs`' `log_gradients`) writes for
each suffix, and `check_log_path` refuses any other. `write_report` turns a saved log (an `.npz`
from `GradientLog.to_npz`, or a folder a `GradientLogger(path=...)` streamed to) into one
self-contained HTML file: no scripts, no links to fetch, every figure a PNG embedded as base64.
The page holds:

1. the run's summary (steps, epochs, variables, losses) and a table per variable;
2. `health()`: each flag with the figures behind it, and a plot of the quantity it thresholds;
3. the loss at each logged step;
4. the gradient L2 norm of each variable, and its update ratio `|w_after - w_before| / |w_before|`;
5. when the log has them (later loggers add them; the report looks for them by name and draws
   nothing when they are absent):
   - applied vs loss gradients: the statistic `APPLIED_STAT` (`"applied_norm"`, the norm of
     the gradient the optimizer's update rule received after loss scaling, accumulation and
     clipping), drawn when it differs from the loss gradient at some step (clipping acted,
     accumulation or loss-scale skips);
   - gradient noise: the per-example statistics of a `GradientLogger(per_example=True)`
     (`GradientLog.noise`), drawn by `kerasbp.plotting.plot_gradient_noise`.

Curvature is not in a gradient log: `kerasbp.HessianProbe` keeps it, and
`kerasbp.plotting.plot_curvature` draws it.

Reading a log and writing the page need NumPy and matplotlib only, not TensorFlow.

Example:
    >>> write_report("xor.npz")                     # doctest: +SKIP
    'xor.html'
"""

import base64
import html
import io
import os

import numpy as np

from kerasbp.checks import check_output_path
from kerasbp.files import atomic_write
from kerasbp.logger import log as log_module
from kerasbp.logger.log import GradientLog, load_gradient_log
from kerasbp.plotting.noise import plot_gradient_noise

#: What a saved gradient log holds, by the path's suffix (lower case).
LOG_FORMATS = {
    ".npz": "the whole log, read back with kerasbp.load_gradient_log",
    ".csv": "the statistics table, one row per logged step and variable: an export, not read back",
}

#: The statistic of the gradient the update rule received, when a logger records it.
APPLIED_STAT = "applied_norm"

_FIGSIZE = (7.6, 3.4)
_DPI = 100


def check_log_path(name, path):
    """`path` as a string if a gradient log can be saved there: a `.npz` or `.csv` file in an existing folder.

    Args:
        name: str, the argument's name, used in the message.
        path: str or path-like.

    Returns:
        str, the path.

    Raises:
        TypeError: if `path` is not a path.
        ValueError: if its folder does not exist, it is a folder, or its suffix is not in `LOG_FORMATS`.

    Example:
        >>> check_log_path("log_gradients", "grads.csv")
        'grads.csv'
    """
    path = check_output_path(name, path)
    if os.path.splitext(path)[1].lower() not in LOG_FORMATS:
        formats = " or ".join(f"{suffix} ({what})" for suffix, what in LOG_FORMATS.items())
        raise ValueError(f"`{name}` must end in {formats}. Received: {name}={path!r}")
    return path


def default_report_path(path):
    """The report's default path: the log's path with `.html` (a streamed folder `run/` gives `run.html`)."""
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    root, suffix = os.path.splitext(path)
    return (root if suffix.lower() == ".npz" else path) + ".html"


def write_report(log, out=None, title=None):
    """Write the HTML report of a gradient log to `out`.

    Args:
        log: path of a saved log (`.npz` or streamed folder), or a `GradientLog` / `GradientLogger`.
        out: str or path-like, the HTML file to write (its folder must exist), or None for the
            log's path with `.html`. Needed when `log` is not a path. Defaults to None.
        title: str or None for the log's file name. Defaults to None.

    Returns:
        str, the path written (atomically: a reader never sees half a page).

    Raises:
        FileNotFoundError: if `log` is a path that does not exist.
        ValueError: if `log` is not a kerasbp gradient log or holds no logged step, or `out` is
            None for a log that is not a path.
        TypeError: if `log` is neither a path nor a `GradientLog`.
    """
    source = None
    if not isinstance(log, GradientLog):
        try:
            source = os.fspath(log)
        except TypeError:
            raise TypeError(f"`log` must be the path of a saved gradient log or a GradientLog. Received: log={log!r}") from None
        log = load_gradient_log(source)
    if out is None:
        if source is None:
            raise ValueError("`out` must be given when `log` is a GradientLog, not a path. Received: out=None")
        out = default_report_path(source)
    out = check_output_path("out", out)
    page = report_html(log, title=title if title is not None else (os.path.basename(source.rstrip("/\\")) if source else None), source=source)
    atomic_write(out, lambda f: f.write(page.encode("utf-8")))
    return out


def report_html(log, title=None, source=None):
    """The report of `log` as one HTML document (a str); see the module docstring for what it holds.

    Args:
        log: `GradientLog` (or `GradientLogger`) holding at least one logged step.
        title: str or None. Defaults to None ("gradient log").
        source: str or None, the file the log was read from, shown in the summary. Defaults to None.

    Returns:
        str, a complete HTML page with the figures embedded as `data:image/png;base64` images.

    Raises:
        TypeError: if `log` is not a `GradientLog`.
        ValueError: if it holds no logged step.
    """
    if not isinstance(log, GradientLog):
        raise TypeError(f"`log` must be a GradientLog. Received: log={log!r}")
    if len(log) == 0:
        raise ValueError("`log` holds no logged step: there is nothing to report")
    title = title or "gradient log"
    health = log.health()
    sections = [
        _summary_section(log, source),
        _health_section(log, health),
        _section("Loss", _p("The loss of each logged step's batch, before that step's update."), _figure(_draw_loss, log)),
        _gradient_section(log),
        *_optional_sections(log),
    ]
    return _PAGE.format(title=_e(f"Gradient log: {title}"), body="\n".join(s for s in sections if s))


# ---------------------------------------------------------------------------- sections


def _summary_section(log, source):
    steps, epochs, losses = log.steps, log.epochs, log.losses
    finite = np.isfinite(losses)
    n_params = sum(int(np.prod(s)) for s in log.shapes)
    rows = [
        ("file", source or "(not saved)"),
        ("logged steps", f"{len(steps):,} (optimizer steps {int(steps[0])} to {int(steps[-1])}, every {log.every_n_steps})"),
        ("epochs", f"{int(epochs[0]) + 1} to {int(epochs[-1]) + 1} (within the last fit call)"),
        ("variables", f"{len(log.names)} in {len(dict.fromkeys(log.layers))} layers, {n_params:,} parameters"),
        ("recorded", {"stats": "statistics per step", "full": "statistics and whole gradients"}.get(log.record, log.record)),
        ("first loss", _num(losses[0])),
        ("last loss", _num(losses[-1]) + ("" if finite[-1] else " (training stopped at the first non-finite step)")),
    ]
    if finite.any():
        best = int(np.flatnonzero(finite)[np.argmin(losses[finite])])
        rows.append(("lowest loss", f"{_num(losses[best])} at step {int(steps[best])}"))
    norms, ratios, weights = log.stat("norm"), log.stat("update_ratio"), log.stat("weight_norm")  # (n_logged, n_variables)
    header = ["variable", "layer", "shape", "activation", "last |g|", "median |g|", "median |Δw|/|w|", "steps with |w| = 0"]
    table = []
    for j, name in enumerate(log.names):
        zero_w = int(np.sum(weights[:, j] == 0))
        table.append(
            [
                name,
                log.layers[j],
                "×".join(str(d) for d in log.shapes[j]) or "scalar",
                log.activations[j] or "-",
                _num(norms[-1, j]),
                _num(_nanmedian(norms[:, j])),
                _num(_nanmedian(np.where(np.isfinite(ratios[:, j]), ratios[:, j], np.nan))),
                str(zero_w),
            ]
        )
    note = ""
    if (weights == 0).any():
        note = _p(
            "The update ratio |Δw|/|w| is infinite where the weights before the step were all zero, "
            "as a zero-initialised bias is at the first step; the medians leave those steps out, and "
            "the CSV export (GradientLog.to_csv) writes them as inf."
        )
    return _section("Summary", _table(["", ""], rows), _table(header, table), note)


def _health_section(log, health):
    f = health.figures
    items = []
    if "first_last_ratio" in f:
        items.append(
            (
                "vanishing",
                health.vanishing,
                f"median over steps of |g| of the first kernel {f['first_kernel']!r} / |g| of the last kernel "
                f"{f['last_kernel']!r} = {_num(f['first_last_ratio'])} (flagged below {_num(f['vanishing_ratio'])})",
                _figure(_draw_vanishing, log, f),
            )
        )
    else:
        items.append(("vanishing", None, "not checked: it needs two or more kernels (variables with 2 or more dimensions), and this log has fewer", ""))
    if "growth" in f:
        absolute = f" or above {_num(f['exploding_norm'])}" if f.get("exploding_norm") is not None else ""
        items.append(
            (
                "exploding",
                health.exploding,
                f"the global gradient norm peaked at {_num(f['max_norm'])} (step {f['max_norm_step']}), {_num(f['growth'])}x its median "
                f"{_num(f['early_median_norm'])} over steps {f['early_steps'][0]}-{f['early_steps'][1]} (flagged above "
                f"{_num(f['exploding_growth'])}x{absolute}; NaN/Inf is the non-finite flag, not this one)",
                _figure(_draw_exploding, log, f),
            )
        )
    else:
        items.append(("exploding", None, "not judged: it needs two or more logged steps with a finite gradient", ""))
    if health.nonfinite:
        where = f"variable {f['first_nonfinite_variable']!r}" if f["first_nonfinite_variable"] else "the loss (the gradients were finite)"
        text = f"first non-finite value at step {f['first_nonfinite_step']}, in {where}"
    else:
        text = "no NaN or Inf in any logged loss or gradient"
    items.append(("non-finite", health.nonfinite, text, _figure(_draw_nonfinite, log, f) if health.nonfinite else ""))
    if f["units"]:
        text = "; ".join(
            f"{name}: {len(health.dead_units.get(name, []))} of {n} units never had a non-zero gradient"
            + (f" (units {health.dead_units[name]})" if name in health.dead_units else "")
            for name, n in f["units"].items()
        )
    else:
        text = "no relu layer in this log"
    items.append(("dead relu units", bool(health.dead_units) if f["units"] else None, text, ""))
    parts = [_p(f"health(): <strong>{'ok' if health.ok else 'FLAGGED'}</strong> over {f['n_logged']:,} logged steps.", raw=True)]
    for name, flagged, text, fig in items:
        status = {True: '<span class="bad">FLAGGED</span>', False: '<span class="ok">ok</span>', None: '<span class="na">not applicable</span>'}[flagged]
        parts.append(f'<div class="flag"><h3>{_e(name)}: {status}</h3>{_p(text)}{fig}</div>')
    parts.append(f"<pre>{_e(str(health))}</pre>")
    return _section("Health", *parts)


def _gradient_section(log):
    return _section(
        "Gradients per layer",
        _p("The L2 norm of each variable's gradient, as the optimizer received it, at each logged step (log scale)."),
        _figure(_draw_stat, log, "norm"),
        _p(
            "The update ratio |Δw|/|w|: how far each step moved a variable, relative to its size (about 1e-3 is "
            "typical for a steady run). Steps where |w| = 0 (zero-initialised biases at the first step) have no finite "
            "ratio and are not drawn."
        ),
        _figure(_draw_stat, log, "update_ratio"),
    )


def _optional_sections(log):
    """Sections for what later loggers record, each only when the log has it."""
    out = []
    differs = APPLIED_STAT in log_module.STATS and (not log.applied_same or bool(np.any(log.clipped)) or bool(np.any(~log.applied)))
    if differs:  # only where what the update used was not the loss gradient itself
        out.append(
            _section(
                "Applied vs loss gradients",
                _p("Solid: the norm of the loss gradient. Dashed: the norm of what the update rule received (after loss scaling, accumulation, clipping)."),
                _figure(_draw_applied, log),
            )
        )
    if log.noise:
        out.append(_section("Gradient noise", _p("Per logged step, from per-example gradients."), _figure(_draw_noise, log)))
    return out


# ---------------------------------------------------------------------------- figures


def _figure(draw, *args):
    """`draw(ax, *args)` on a new figure, returned as an embedded PNG `<img>` (a `<figure>` element)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, nothing to close
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    ax = fig.subplots()
    alt = draw(ax, *args)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))  # optimizer steps
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption></figure>'


def _draw_loss(ax, log):
    losses = log.losses
    positive = bool(np.all(losses[np.isfinite(losses)] > 0))
    ax.plot(log.steps, np.where(np.isfinite(losses), losses, np.nan), color="tab:blue", label="loss")
    bad = ~np.isfinite(losses)
    if bad.any():
        ax.axvline(log.steps[bad][0], color="tab:red", linestyle=":", label=f"first non-finite loss (step {int(log.steps[bad][0])})")
        ax.legend(loc="best", fontsize="small")
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("batch loss before the step")
    ax.grid(True, alpha=0.3)
    return "Loss per logged step"


def _draw_stat(ax, log, stat):
    from kerasbp.plotting.curves import plot_gradient_norms

    plot_gradient_norms(log, ax=ax, stat=stat)
    return {"norm": "Gradient L2 norm per variable", "update_ratio": "Update ratio |Δw|/|w| per variable"}[stat]


def _draw_vanishing(ax, log, f):
    j_first, j_last = log.names.index(f["first_kernel"]), log.names.index(f["last_kernel"])
    norms = log.stat("norm")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = norms[:, j_first] / norms[:, j_last]
    ax.plot(log.steps, np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.nan), label="|g first kernel| / |g last kernel|")
    ax.axhline(f["vanishing_ratio"], color="tab:red", linestyle=":", label=f"threshold {_num(f['vanishing_ratio'])}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("ratio")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    return "Vanishing: first-to-last kernel gradient ratio"


def _draw_exploding(ax, log, f):
    norms = log.global_norms
    ax.plot(log.steps, np.where(np.isfinite(norms) & (norms > 0), norms, np.nan), label="global gradient norm")
    threshold = f["early_median_norm"] * f["exploding_growth"]
    ax.axhline(threshold, color="tab:red", linestyle=":", label=f"threshold {_num(f['exploding_growth'])}x the early median")
    if f.get("exploding_norm") is not None:
        ax.axhline(f["exploding_norm"], color="tab:orange", linestyle=":", label=f"absolute threshold {_num(f['exploding_norm'])}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("gradient L2 norm")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    return "Exploding: the global gradient norm per step"


def _draw_nonfinite(ax, log, f):
    from kerasbp.plotting.curves import _short_name

    counts = log.stat("nonfinite")  # (n_logged, n_variables)
    for j in range(len(log.names)):
        ax.plot(log.steps, counts[:, j], marker=".", label=_short_name(log, j))
    bad_loss = ~np.isfinite(log.losses)
    ax.plot(log.steps, bad_loss.astype(float), color="black", linestyle="--", label="loss non-finite (1 = yes)")
    ax.axvline(f["first_nonfinite_step"], color="tab:red", linestyle=":")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("NaN/Inf entries")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize="small")
    ax.grid(True, alpha=0.3)
    return f"Non-finite: NaN/Inf gradient entries per variable, first at step {f['first_nonfinite_step']}"


def _draw_applied(ax, log):
    from kerasbp.plotting.curves import _layer_colors, _short_name

    loss_g, applied = log.stat("norm"), log.stat(APPLIED_STAT)
    colors = _layer_colors(len(log.names))
    for j in range(len(log.names)):
        ax.plot(log.steps, np.where(loss_g[:, j] > 0, loss_g[:, j], np.nan), color=colors[j], label=f"{_short_name(log, j)} loss")
        ax.plot(log.steps, np.where(applied[:, j] > 0, applied[:, j], np.nan), color=colors[j], linestyle="--", label=f"{_short_name(log, j)} applied")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("gradient L2 norm")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize="small")
    ax.grid(True, alpha=0.3)
    return "Applied vs loss gradient norms"


def _draw_noise(ax, log):
    plot_gradient_noise(log, ax=ax)
    return "Gradient noise statistics"


# ---------------------------------------------------------------------------- HTML


def _e(text):
    return html.escape(str(text), quote=True)


def _p(text, raw=False):
    return f"<p>{text if raw else _e(text)}</p>"


def _num(x):
    x = float(x)
    return f"{x:.4g}" if np.isfinite(x) else str(x)


def _nanmedian(a):
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _table(header, rows):
    head = "".join(f"<th>{_e(h)}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def _section(title, *parts):
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="kerasbp.report">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }}
h2 {{ font-size: 1.3em; margin-top: 1.6em; }}
h3 {{ font-size: 1.05em; margin: .8em 0 .2em; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: .92em; }}
td, th {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; }}
th {{ background: #f4f4f4; }}
figure {{ margin: .6em 0; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ font-size: .85em; color: #666; }}
pre {{ background: #f7f7f7; padding: .6em; white-space: pre-wrap; }}
.ok {{ color: #1a7f37; }}
.bad {{ color: #c62828; }}
.na {{ color: #777; }}
.flag {{ border-left: 4px solid #ddd; padding-left: .8em; margin: .8em 0; }}
footer {{ margin-top: 2em; font-size: .85em; color: #666; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
<footer>Written by kerasbp.report. Read the log in Python with <code>kerasbp.load_gradient_log(path)</code>.</footer>
</body>
</html>
"""
