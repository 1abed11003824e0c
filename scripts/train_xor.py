"""The 2-4-1 sigmoid network of the classic NumPy XOR example, trained by Keras to learn XOR.

Usage:
    python scripts/train_xor.py                         # Adam at 0.05, binary cross-entropy, 1000 epochs
    python scripts/train_xor.py --optimizer sgd --learning-rate 2 --loss mse --epochs 5000 --seed 3
    python scripts/train_xor.py --json --log-gradients grads.npz

Prints the truth table with the network's outputs, the number of optimizer steps, and whether it
learned XOR. `--log-gradients PATH.npz` saves the whole gradient log (`scripts/report.py PATH.npz`
draws it), `PATH.csv` the statistics table. Exit status: 0 ok (learned or not, as printed),
1 training diverged, 2 bad input, 130 interrupted. Options: --help.
"""

from kerasbp.cli import main_xor, script_main

if __name__ == "__main__":
    script_main(main_xor)
