"""The README documents every setting and starts with the two set-up commands."""

from core.settings import Settings
from tests.conftest import REPO


def test_every_setting_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"GUARDTUNE_{name.upper()}" not in readme]
    assert missing == []


def test_readme_opens_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    head = readme[: readme.index("## Layout")]
    assert "make demo" in head
    assert "make test" in head
    makefile = (REPO / "Makefile").read_text()
    assert "demo: install" in makefile
    assert "test: install" in makefile
    assert "pytest" in (REPO / ".ci" / "run").read_text() or "make test" in (REPO / ".ci" / "run").read_text()
