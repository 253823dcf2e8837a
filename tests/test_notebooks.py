"""Notebook hygiene: committed without outputs, valid, shaped as lessons, safe. (nbval executes them.)"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

LABS = Path(__file__).resolve().parent.parent / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
HAND_WRITTEN_CHAT = ("<|im_start|>", "<|start_header_id|>", "<|eot_id|>", "[INST]", "<|user|>", "<|assistant|>")


def _cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def _code(path: Path) -> str:
    return "\n".join(c.source for c in _cells(path) if c.cell_type == "code")


def test_there_are_labs():
    assert NOTEBOOKS and all(re.match(r"\d\d_[a-z0-9_]+\.ipynb$", p.name) for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_valid_and_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_shape(path):
    cells = _cells(path)
    number = int(path.name[:2])
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# Lab 3.1.{number}:"), path.name
    code = _code(path)
    assert re.search(r"\b(lh|labhelpers)\.profile\(", code), f"{path.name}: no profile() setup cell"
    heads = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "self-check" in c.source.lower()]
    assert heads, f"{path.name}: no Self-check section"
    assert any("assert " in c.source for c in cells[heads[0]:] if c.cell_type == "code"), f"{path.name}: no assert"
    assert any("try next" in c.source.lower() for c in cells if c.cell_type == "markdown"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_safe_code(path):
    code = _code(path)
    assert not re.search(r"(^|\s|!|%)sudo\s", code), f"{path.name}: sudo in a notebook"
    assert not re.search(r"(!|%)\s*pip\s+install|pip install", code), f"{path.name}: pip install in a notebook"
    assert "trust_remote_code=True" not in code
    for token in HAND_WRITTEN_CHAT:
        assert token not in code, f"{path.name}: hand-written chat token {token!r}; use apply_chat_template"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_relative_links_resolve(path):
    for cell in _cells(path):
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", cell.source):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


TRAINING_LABS = [p for p in NOTEBOOKS if p.name[:2] in ("03", "04", "05", "06", "07", "08", "09")]
# a duration typed into prose ("10-15 minutes", "half an hour", "about 2 hours"); computed ones live in code
QUOTED_DURATION = re.compile(r"\b(\d+(\.\d+)?(\s*-\s*\d+)?\s+(seconds?|minutes?|hours?)|(an?|half an?|one|two|several|a few)"
                             r"\s+(seconds|minutes?|hours?))\b", re.I)  # not "a second model"


@pytest.mark.parametrize("path", TRAINING_LABS, ids=lambda p: p.stem)
def test_training_labs_print_a_computed_estimate_before_training_and_the_measured_time_after(path):
    code = _code(path)
    estimate = code.find("estimate_time(")
    assert estimate >= 0, f"{path.name}: no lh.estimate_time(...) before training"
    first_train = min(i for i in (code.find("train(trainer"), code.find("training.train(")) if i >= 0)
    assert estimate < first_train, f"{path.name}: the estimate comes after training starts"
    assert "estimate.versus(" in code[first_train:], f"{path.name}: the measured time is not set next to the estimate"
    assert "lh.schedule(" in code, f"{path.name}: the steps are not computed by lh.schedule"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_duration_is_quoted_in_markdown(path):
    prose = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    found = [m.group(0) for m in QUOTED_DURATION.finditer(prose)]
    assert not found, f"{path.name}: durations quoted in markdown (compute them in code instead): {found}"
