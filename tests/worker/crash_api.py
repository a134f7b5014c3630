"""The API under uvicorn, SIGKILLed at one point (run as a script, for the fault tests):
right after a job's transaction commits, before its outbox row is sent to the broker."""

from __future__ import annotations

import os
import signal
import sys

import uvicorn

from core import outbox


def _die_before_sending(message: outbox.Pending) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    outbox.send = _die_before_sending
    uvicorn.run("api.app:create_app", factory=True, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
