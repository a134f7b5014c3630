"""``guardtune worker`` with one hook, for the fault tests (run as a script).

``FAULT_HOOK=module:function`` is wrapped so that its first call in any process of this
worker (``FAULT_MARKER`` absent) creates ``FAULT_MARKER`` and sleeps ``FAULT_SLEEP_S``
before running: a stage in flight, holding its lease and heartbeating, while the test
kills the worker or lets another job wait in the queue behind it. ``FAULT_QUEUES``: the
queues it consumes; ``FAULT_BEAT=0``: without the reaper."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path


def install() -> None:
    module_name, attr = os.environ["FAULT_HOOK"].split(":")
    module = importlib.import_module(module_name)
    real = getattr(module, attr)
    marker = Path(os.environ["FAULT_MARKER"])
    pause = float(os.environ.get("FAULT_SLEEP_S", "600"))

    def hooked(*args, **kwargs):
        try:
            with marker.open("x") as f:  # only the first call anywhere
                f.write(str(os.getpid()))
        except FileExistsError:
            return real(*args, **kwargs)
        time.sleep(pause)
        return real(*args, **kwargs)

    setattr(module, attr, hooked)


if __name__ == "__main__":
    from celery.bin.celery import main

    from cli.guardtune import worker_argv

    install()
    argv = worker_argv(
        os.environ.get("FAULT_QUEUES", "default,gpu"), with_beat=os.environ.get("FAULT_BEAT", "1") == "1"
    )
    sys.argv = ["celery", *argv[3:]]  # drop "python -m celery"
    sys.exit(main())
