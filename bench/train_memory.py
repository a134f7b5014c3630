"""Peak training memory and speed beside the memory planner's estimate — entry point of
``bench.train_mem.run`` (grid, method and caveats: that module's docstring; modules:
``bench/train_mem/``). Each measurement runs in a child process started on this script.

    python bench/train_memory.py                      # the full grid (the result records its wall_seconds)
    python bench/train_memory.py --quick --dirty-ok   # tiny model only, a smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.train_mem.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
