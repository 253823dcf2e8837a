"""The code is ruff-clean (rules in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_reports_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency (pip install -e '.[test]')"
    result = subprocess.run([ruff, "check", "labhelpers", "tests", "bench", "data", "docs", "conftest.py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_enforces_the_line_length_the_code_uses():
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120
    assert "E501" in ruff["lint"]["select"], "line too long (E501) must stay selected"


def test_the_tests_ignore_warnings_only_by_their_exact_message():
    """No blanket "ignore::DeprecationWarning": the labs are held to "no unexplained warning", and so are the tests."""
    import tomllib

    filters = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    for entry in filters:
        action, _, rest = entry.partition(":")
        if action == "ignore":
            message = rest.split(":")[0]
            assert len(message) >= 30, f"filter {entry!r} ignores a category, not one exact message"
