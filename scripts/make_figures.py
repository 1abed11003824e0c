"""Make the README figure: gradient norms per layer while the 2-4-1 sigmoid network learns XOR.

Usage:
    python scripts/make_figures.py                          # writes docs/gradient_norms.png
    python scripts/make_figures.py --out /tmp/norms.png --epochs 1000 --seed 1

Trains `kerasbp.xor_model(seed)` with Adam (learning rate 0.05, binary cross-entropy, one batch
of the 4 XOR points per step) through `kerasbp.train` with a `GradientLogger`, and draws the loss
(top) and each variable's gradient L2 norm per optimizer step (bottom, log scale) with
`kerasbp.plotting`. Takes a few seconds on a CPU. Options: --help.
"""

import argparse
import os
import sys

from matplotlib.figure import Figure  # drawn without pyplot: no window, no backend to choose

import kerasbp as kb
from kerasbp.plotting import plot_gradient_norms, plot_loss_curves

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "gradient_norms.png")


def make_gradient_norms_figure(out=DEFAULT_OUT, epochs=500, seed=0, learning_rate=0.05, dpi=110):
    """Train the XOR network with a GradientLogger and save the two-panel figure to `out`.

    Args:
        out: str, the PNG file to write (its folder is created). Defaults to `docs/gradient_norms.png`.
        epochs: int >= 1, epochs of one full batch each (so one optimizer step per epoch).
            Defaults to 500.
        seed: int >= 0, random seed of the initial weights. Defaults to 0.
        learning_rate: positive float, Adam's learning rate. Defaults to 0.05.
        dpi: int, resolution of the PNG. Defaults to 110.

    Returns:
        The `GradientLogger` that recorded the run.
    """
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=seed), "adam", learning_rate=learning_rate, loss="binary_crossentropy")
    logger = kb.GradientLogger()
    kb.train(model, X, y, epochs=epochs, batch_size=4, callbacks=[logger])
    fig = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 3))
    title = f"XOR, 2-4-1 sigmoid network, Adam (lr {learning_rate:g})"
    plot_loss_curves({"binary cross-entropy": logger.losses}, ax=top, xlabel="", ylabel="loss", first_x=0, title=title)
    plot_gradient_norms(logger, ax=bottom, title="gradient L2 norm per layer and variable (recorded by GradientLogger)")
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return logger


def main(argv=None):
    """Parse the command line and write the figure; returns the exit status."""
    epilog = (
        "examples:\n"
        "  python scripts/make_figures.py\n"
        "  python scripts/make_figures.py --out /tmp/norms.png --epochs 1000 --seed 1\n\n"
        "exit status:\n"
        "  0    the figure was written\n"
        "  2    bad input: the message names the option"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="PNG file to write (default: docs/gradient_norms.png)")
    parser.add_argument("--epochs", type=int, default=500, help="training epochs, one step each (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial weights (default: 0)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer. Received: {args.epochs}")
    if args.seed < 0:
        parser.error(f"--seed must be an integer >= 0. Received: {args.seed}")
    make_gradient_norms_figure(args.out, epochs=args.epochs, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
