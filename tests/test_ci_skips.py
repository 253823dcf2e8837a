"""Under CI=true a skip fails unless the test carries a marker for what CI cannot have (root conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("root_conftest", Path(__file__).resolve().parent.parent / "conftest.py")
root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root)


def test_a_skip_under_ci_fails_unless_marked_gpu_or_ollama(monkeypatch):
    monkeypatch.setenv("CI", "true")
    failure = root.ci_skip_failure("llama_cpp is not installed", frozenset())
    assert failure and "only tests marked gpu or ollama may skip" in failure and "llama_cpp" in failure
    assert root.ci_skip_failure("this machine has a GPU", frozenset({"gpu"})) is None
    assert root.ci_skip_failure("no server", frozenset({"ollama", "parametrize"})) is None


def test_the_words_of_a_reason_do_not_excuse_a_skip(monkeypatch):
    monkeypatch.setenv("CI", "true")
    for reason in ("no GPU here", "CUDA missing", "Ollama is not running", "CPU-only check"):
        assert root.ci_skip_failure(reason, frozenset()), f"an unmarked skip was allowed by its words: {reason}"


def test_outside_ci_every_skip_stays_a_skip(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert root.ci_skip_failure("anything", frozenset()) is None


@pytest.mark.parametrize("marker", root.CI_SKIP_MARKERS)
def test_the_allowed_markers_are_registered(marker, pytestconfig):
    assert any(line.startswith(f"{marker}:") for line in pytestconfig.getini("markers"))
