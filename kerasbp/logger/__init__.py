"""GradientLogger and the log it keeps (temporary re-export while the package is split)."""

from kerasbp.callbacks import GradientLog, GradientLogger, Health, load_gradient_log

__all__ = ["GradientLog", "GradientLogger", "Health", "load_gradient_log"]
