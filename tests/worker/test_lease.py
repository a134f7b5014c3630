"""A stage's lease holder is one process: a forked pool process (Celery's prefork children,
which inherit the tasks imported by their parent) gets an id of its own."""

from __future__ import annotations

import multiprocessing

from worker.pipeline import jobstate


def _send_id(conn) -> None:
    conn.send(jobstate.worker_id())
    conn.close()


def test_a_forked_process_holds_leases_under_its_own_id():
    parent_id = jobstate.worker_id()
    assert jobstate.worker_id() == parent_id  # stable within a process
    ctx = multiprocessing.get_context("fork")
    ids = []
    for _ in range(2):
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_send_id, args=(send,))
        child.start()
        ids.append(receive.recv())
        child.join(timeout=30)
        assert child.exitcode == 0
    assert len({parent_id, *ids}) == 3
