"""Job-status polling load on the API, on Postgres and on SQLite — entry point of
``bench.load.run`` (what it measures: that module's docstring; modules: ``bench/load/``).

    python bench/api_load.py                                  # after: both databases, ~8 min
    python bench/api_load.py --server-commit a4a4565 --label before --duration 20
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.load.run import main  # noqa: E402

if __name__ == "__main__":
    main()
