"""The field's harmful fine-tuning benchmark on SST-2 (Vaccine, Lisa, Booster) — entry point of
``bench.harmful_sst2.run`` (method and sizing: ``bench/SAFETY.md``).

    python bench/harmful_finetune.py --part p0.1 --threads 2          # one part of the grid
    python bench/harmful_finetune.py --part p0,p0.05,p0.2 --threads 2
    python bench/harmful_finetune.py --part stress --threads 2
    python bench/harmful_finetune.py --quick --base DIR --part p0.1   # smoke run on a tiny model
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harmful_sst2.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
