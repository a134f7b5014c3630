"""The README's benchmark tables are rendered from ``bench/results/*.json``
(``bench/render_readme.py``); a hand edit of either side without re-rendering fails here."""

from __future__ import annotations

import json

from bench import render_readme
from tests.conftest import REPO


def test_readme_tables_match_the_results_json():
    text = (REPO / "README.md").read_text()
    names = [m.group("name") for m in render_readme.BLOCK.finditer(text)]
    assert {"safety_replication", "aligned_reference", "api_load"} <= set(names)
    assert render_readme.stale_blocks(text) == [], "run: python bench/render_readme.py"


def test_a_changed_number_is_detected(tmp_path, monkeypatch):
    doc = json.loads((REPO / "bench" / "results" / "safety_replication.json").read_text())
    text = (REPO / "README.md").read_text()
    row = doc["summary"][0]
    row["asr"]["mean"] = 0.987
    monkeypatch.setattr(render_readme, "RESULTS", tmp_path)
    for path in (REPO / "bench" / "results").glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "safety_replication.json").write_text(json.dumps(doc))
    assert render_readme.stale_blocks(text) == ["safety_replication"]
    rendered = render_readme.render(text)
    assert f"| {row['attack']} | `{row['mode']}` |" in rendered
    assert "| 0.99 [" in rendered
    assert render_readme.stale_blocks(rendered) == []


def test_the_provenance_line_names_commit_and_dirty_tree():
    text = (REPO / "README.md").read_text()
    body = text[text.index("<!-- results:safety_replication -->") : text.index("<!-- /results:safety_replication -->")]
    doc = json.loads((REPO / "bench" / "results" / "safety_replication.json").read_text())
    assert doc["git"]["commit"][:7] in body
    assert ("uncommitted changes" in body) == doc["git"]["dirty"]


def test_each_check_is_rendered_with_its_measured_value():
    text = (REPO / "README.md").read_text()
    body = text[text.index("<!-- results:safety_replication -->") : text.index("<!-- /results:safety_replication -->")]
    doc = json.loads((REPO / "bench" / "results" / "safety_replication.json").read_text())
    for name, check in doc["checks"].items():
        verdict = "met" if check["met"] else "**missed**"
        assert f"- {name}: {verdict} ({render_readme.check_value(check['value'])})" in body
    assert render_readme.check_value(0.118) == "+11.8 points"
    assert render_readme.check_value(-0.02) == "-2.0 points"
    assert render_readme.check_value("1 of 3 released") == "1 of 3 released"
    assert render_readme.check_value({"asr": [0.25, 0.2]}) == "asr 0.25 vs 0.2"
    assert render_readme.check_value(None) == "not measured"
