"""Ctrl-C and SIGTERM as exceptions, and the exit statuses the scripts give them.

Python turns SIGINT (Ctrl-C) into `KeyboardInterrupt`. Inside `signals_as_interrupts`, SIGTERM
(a job scheduler's time limit, `kill`) becomes `Terminated`, a `KeyboardInterrupt`, so that
every `finally` and `except KeyboardInterrupt` that keeps a run's log on Ctrl-C keeps it on
SIGTERM too. The scripts exit with 128 + the signal's number, as a shell reports a process
killed by it.

A signal's exception is raised wherever the main thread happens to be, and Python prints and
ignores an exception raised inside a `__del__` or a weakref callback (TensorFlow has many), so
an interrupt can be lost. Inside `signals_as_interrupts` the signal is also remembered, and
`raise_pending` (called by `kerasbp.train` between its compiled calls) raises it again.
"""

import contextlib
import signal
import threading

#: The signal received inside `signals_as_interrupts` and not yet seen leave it, or None.
_pending = None


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM while `signals_as_interrupts` is active."""


def _interrupt(signum):
    if signum == signal.SIGTERM:
        return Terminated(f"terminated by signal {signum} (SIGTERM)")
    return KeyboardInterrupt()


def _raise_interrupt(signum, frame):
    global _pending
    _pending = signum
    raise _interrupt(signum)


@contextlib.contextmanager
def signals_as_interrupts():
    """Context manager: SIGINT raises `KeyboardInterrupt` and SIGTERM `Terminated` in the main
    thread inside it, and either is remembered for `raise_pending`.

    Outside the main thread (where Python cannot set handlers) it changes nothing.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending = None


def raise_pending():
    """Raise the interrupt received inside `signals_as_interrupts`, if any, again.

    Call it where stopping is safe; it does nothing when no signal came.

    Raises:
        KeyboardInterrupt: after SIGINT; `Terminated` after SIGTERM.
    """
    if _pending is not None:
        raise _interrupt(_pending)


def exit_status(interrupt):
    """The exit status for an interrupted script: 143 (128 + SIGTERM) or 130 (128 + SIGINT)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
