"""Numbers in the README come from files written by code, never typed by hand."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_readme_tables_are_rendered_from_the_files_written_by_code():
    import readme_tables
    for rel, names in readme_tables.FILES.items():
        text = (ROOT / rel).read_text()
        assert readme_tables.render(text, names) == text, rel
    assert "<!-- results:start -->" in (ROOT / "README.md").read_text()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"^ {4,}(python -m pytest.*)$", readme, re.M)
    assert cmds == ["python -m pytest -q tests"]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_committed_notebooks_hold_no_absolute_path_of_the_machine_that_ran_them():
    for nb in sorted(ROOT.glob("*.ipynb")):
        found = re.findall(r"(?:/work/|/home/|/tmp/|/root/|/content/)[^\s\"']*", nb.read_text())
        assert not found, (nb.name, found[:3])
