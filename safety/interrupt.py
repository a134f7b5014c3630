"""Stopping a long model pass between two batches: a cancelled job's scan or evaluation
stops within seconds instead of running to its end.

The caller wraps the work in :func:`stop_when` with a cheap "should stop" callback (the
worker's: is the job cancelled?); every pass over a list of sequences calls :func:`check`
before each batch (generation, the probe's features, the reference cache, example losses,
the scan's judge windows), which raises :class:`Interrupted` once the callback says so. The
callback runs at most once per ``every_s`` (the first :func:`check` always runs it), so a
database read stays cheap beside a batch. Training has its own step-boundary checks
(``safety.trainer``'s ``should_cancel``) and is not interrupted here.

No torch here: the worker imports this module at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

POLL_EVERY_S = 1.0


class Interrupted(Exception):
    """The work was stopped between batches because its :func:`stop_when` callback said so."""


_should_stop: ContextVar[Callable[[], bool] | None] = ContextVar("should_stop", default=None)


@contextmanager
def stop_when(should_stop: Callable[[], bool], every_s: float = POLL_EVERY_S) -> Iterator[None]:
    """Within the block, :func:`check` raises :class:`Interrupted` once ``should_stop()`` is
    true (asked at most once per ``every_s``)."""
    last_asked = -float("inf")

    def throttled() -> bool:
        nonlocal last_asked
        now = time.monotonic()
        if now - last_asked < every_s:
            return False
        last_asked = now
        return should_stop()

    token = _should_stop.set(throttled)
    try:
        yield
    finally:
        _should_stop.reset(token)


def check() -> None:
    """Raise :class:`Interrupted` if the enclosing :func:`stop_when` says stop (else nothing;
    outside one, nothing)."""
    should_stop = _should_stop.get()
    if should_stop is not None and should_stop():
        raise Interrupted()
