"""Numbers in the README come from files written by code, never typed by hand."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_performance_table_is_rendered_from_the_benchmark_results():
    import readme_perf
    assert readme_perf.block() in (ROOT / "README.md").read_text()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"^ {4,}(python -m pytest.*)$", readme, re.M)
    assert cmds == ["python -m pytest -q tests"]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()
