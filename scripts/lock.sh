#!/bin/sh
# Rewrite constraints.txt (the lock) from the venv the tests just passed in: every installed
# third-party distribution at its installed version, except torch and its CUDA companions (pinned
# by constraints-cpu.txt and the worker image) and guardtune itself.
set -eu
cd "$(dirname "$0")/.."
{
  sed -n '/^#/p' constraints.txt
  .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(torch|triton|nvidia-|guardtune)([=-]|$)'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
