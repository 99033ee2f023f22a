"""SIGTERM as an exception: a terminated job unwinds (atomic writes discard their temporary files, jobs
save what resumes them) and exits non-zero, instead of dying mid-write or, as Lightning's own handler
does on its own, exiting 0 as if it had finished.

While Lightning fits (:func:`lightning_handles_sigterm`), the signal is left to Lightning, which stops at
the next step boundary with its ``SIGTERMException``; the training code saves ``last.ckpt`` there and
raises :class:`~common.errors.Terminated`.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from common.errors import Terminated

_deferred = 0


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if _deferred:
        return  # Lightning's handler, composed with this one, has noted it and stops at a step boundary
    raise Terminated("stopped by SIGTERM")


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (call once, from the entry point)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def lightning_handles_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM is Lightning's to handle (it stops the fit at a step boundary)."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
