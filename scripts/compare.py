"""Keras against its NumPy twin, step by step: teacher-forced and free-running.

Usage:
    python scripts/compare.py                                   # XOR, SGD, float32, 50 epochs, batch 3
    python scripts/compare.py --task linear --optimizer adam --dtype float64
    python scripts/compare.py --task xor --optimizer rmsprop --loss mse --epochs 100 --json

Prints a summary of the worst differences (or, with --json, the whole report). Exit status: 0 when
every teacher-forced step agrees within the dtype's tolerances, 1 when not, 2 on bad input.
"""

from kerasbp.cli import main_compare, script_main

if __name__ == "__main__":
    script_main(main_compare)
