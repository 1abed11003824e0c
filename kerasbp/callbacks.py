"""Old home of `GradientLogger`; kept so that `from kerasbp.callbacks import ...` goes on working.

The logger now lives in the package `kerasbp.logger`.
"""

from kerasbp.logger import STATS, GradientLog, GradientLogger, Health, load_gradient_log

__all__ = ["STATS", "GradientLog", "GradientLogger", "Health", "load_gradient_log"]
