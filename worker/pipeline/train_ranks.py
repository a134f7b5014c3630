"""One process of stage ``train`` run data-parallel (``worker.pipeline.train.launch_ranks``
starts N of them under ``torchrun``): it joins the process group (``safety.distributed``) and
runs ``worker.pipeline.train.train_job``; rank 0 writes how the run ended to the result file."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from worker.pipeline.train import train_job


def main(argv: list[str]) -> None:
    """One rank: ``<job id> <result file> <after seconds>``."""
    from safety import distributed

    job_id, result_file, after = argv[0], Path(argv[1]), float(argv[2])
    here = distributed.init_from_env()
    try:
        outcome = train_job(job_id, after)
        if here.is_main:
            result_file.write_text(json.dumps(asdict(outcome)))
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1:])
