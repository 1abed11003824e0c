"""One self-contained HTML page of figures from a saved gradient log.

Usage:
    python scripts/report.py xor.npz                      # writes xor.html beside it
    python scripts/report.py runs/diverged.npz --out /tmp/diverged.html --title "lr 5: diverged"

The log is what `--log-gradients PATH.npz` saved (or `GradientLog.to_npz`, or the folder a
`GradientLogger(path=...)` streamed to). The page holds the run's summary, `health()` with the
figure behind each flag, the loss, each variable's gradient norm and update ratio per step (and
applied vs loss gradients, noise and curvature when the log has them), figures embedded as PNG.
Needs NumPy and matplotlib, not TensorFlow. Exit status: 0 written, 2 bad input. Options: --help.
"""

from kerasbp.cli import main_report, script_main

if __name__ == "__main__":
    script_main(main_report)
