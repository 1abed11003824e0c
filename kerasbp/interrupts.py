"""Ctrl-C and SIGTERM as exceptions, and the exit statuses the scripts give them.

Python turns SIGINT (Ctrl-C) into `KeyboardInterrupt`; `terminate_as_interrupt` turns SIGTERM
(a job scheduler's time limit, `kill`) into `Terminated`, a `KeyboardInterrupt`, so that every
`finally` and `except KeyboardInterrupt` that keeps a run's log on Ctrl-C keeps it on SIGTERM
too. The scripts exit with 128 + the signal's number, as a shell reports a process killed by it.
"""

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM while `terminate_as_interrupt` is active."""


def _raise_terminated(signum, frame):
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


@contextlib.contextmanager
def terminate_as_interrupt():
    """Context manager: SIGTERM raises `Terminated` in the main thread inside it.

    Outside the main thread (where Python cannot set handlers) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interrupt):
    """The exit status for an interrupted script: 143 (128 + SIGTERM) or 130 (128 + SIGINT)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
