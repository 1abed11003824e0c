"""Linear regression with backpropagation: a Keras Dense(1) learning y = 2x + 1 + noise.

This is the Keras linear regression that kerasbp grew from, beside the least-squares answer.

Usage:
    python scripts/train_linear.py                      # the original run: 100 points, SGD, 100 epochs, batch 10
    python scripts/train_linear.py --optimizer adam --learning-rate 0.05 --epochs 300
    python scripts/train_linear.py --csv data.csv --x-columns a,b --y-column y --standardize
    python scripts/train_linear.py --json --log-gradients grads.npz

Prints the final training loss, the learned coefficient(s) and intercept beside the ordinary least
squares solution, and predictions at x = 0.3, 0.5, 0.7. Exit status: 0 ok, 1 training diverged,
2 bad input. Options: --help.
"""

from kerasbp.cli import main_linear, script_main

if __name__ == "__main__":
    script_main(main_linear)
