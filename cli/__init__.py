"""The commands: ``guardtune`` (serve, worker, infer, migrate, demo) and ``guardtune-ops``.

Each command imports what it runs inside itself, so ``guardtune serve`` and ``migrate`` (the
API image, no torch) import neither torch nor ``worker``."""
