"""Training overhead of guardtune's adaptive KL objective against plain SFT and a
paper-style implementation — entry point of ``bench.overhead.run`` (variants, method and
caveats: that module's docstring; modules: ``bench/overhead/``). Each variant runs in a
child process started on this script.

    python bench/train_overhead.py                     # defaults: about 6-7 minutes on 2 cores
    python bench/train_overhead.py --steps 16 --repeats 2 --threads 0
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.overhead.run import main  # noqa: E402

if __name__ == "__main__":
    main()
