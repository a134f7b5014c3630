"""README's training-overhead block is the rendering of bench/results/train_overhead.json."""

from __future__ import annotations

import json

from bench.render_overhead import BEGIN, END, RESULT, render, replace_block
from tests.conftest import REPO


def test_readme_overhead_block_is_rendered_from_the_json() -> None:
    readme = (REPO / "README.md").read_text()
    block = render(json.loads(RESULT.read_text()))
    assert readme.count(BEGIN) == 1
    assert readme.count(END) == 1
    assert replace_block(readme, block) == readme
    assert replace_block(readme, block.replace("| 1.", "| 9.", 1)) != readme  # the check can fail
