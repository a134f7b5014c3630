"""The paper's claim in miniature, version 2 — entry point of ``bench.replication.run``
(method: ``bench/SAFETY.md``; modules: ``bench/replication/``).

    python bench/safety_replication.py                      # full run (clean tree required)
    python bench/safety_replication.py --quick --base DIR   # smoke run on a tiny model
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.replication.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
