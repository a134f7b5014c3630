"""Preference fine-tuning under attack: guardtune's DPO against a preference attack — entry point
of ``bench.preference.run`` (method: its docstring).

    python bench/dpo_safety.py --threads 2                       # modes none and adaptive, seeds 0 1 2
    python bench/dpo_safety.py --seeds 1 --modes adaptive         # merges into the results file
    python bench/dpo_safety.py --quick --base DIR                 # smoke run on a tiny model
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.preference.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
