"""Linear regression with backpropagation: a Keras Dense(1) learning y = 2x + 1 + noise, or your CSV.

Its defaults are the Keras linear regression that kerasbp grew from (100 points, SGD at 0.01,
100 epochs, batch 10), reported beside the least-squares answer.

Usage:
    python scripts/train_linear.py                      # 100 points of y = 2x + 1 + noise, SGD, 100 epochs, batch 10
    python scripts/train_linear.py --optimizer adam --learning-rate 0.05 --epochs 300
    python scripts/train_linear.py --csv diabetes.csv --x-columns bmi --y-column target --standardize
    python scripts/train_linear.py --json --log-gradients grads.npz

Prints, in the data's units, the learned coefficient(s) and intercept beside the least-squares
answer with each gap as a relative difference, the mean squared error of both on the data, and
predictions inside the data (one input column: at its quartiles; several: at three rows of the
data at the target's quartiles). Exit status: 0 ok, 1 training diverged, 2 bad input,
130 interrupted. Options: --help.
"""

from kerasbp.cli import main_linear, script_main

if __name__ == "__main__":
    script_main(main_linear)
