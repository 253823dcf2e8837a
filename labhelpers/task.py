"""The checkable task the labs' datasets teach, and its metric.

Every answer in data/*.jsonl has exactly this shape::

    Answer: <one or two sentences, on one line>
    Lab: 3.1.<N>

where N (0-10, no leading zero) is the lab that covers the topic. Because the target is structured,
a generation can be scored without a judge model:

- ``format_rate``: share of generations whose whole text (leading/trailing whitespace ignored) is
  exactly those two lines (``format_ok``). Extra text before, between or after them fails.
- ``lab_accuracy``: share of generations whose ``Lab: 3.1.N`` line names the expected lab
  (``cited_lab`` reads the line even when the rest of the format is off; no line counts as wrong).
- ``cited_rate``: share of generations that have a parseable ``Lab: 3.1.N`` line at all.

A base model scores near 0 on all three; a model fine-tuned on the SFT file should reach a high
format rate on the held-out prompts, whose facts never appear in training.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LAB_NAMES: dict[int, str] = {
    0: "environment check",
    1: "LoRA from scratch",
    2: "dataset preparation",
    3: "LoRA SFT on Llama 3.1 8B",
    4: "NEFTune",
    5: "QLoRA on Llama 3.1 70B",
    6: "DPO",
    7: "SimPO",
    8: "ORPO",
    9: "KTO",
    10: "deploy to Ollama",
}
_LAB_NUMBER = r"(?:10|[0-9])"
_FORMAT = re.compile(r"Answer:[ \t]*(?P<answer>\S[^\n]*?)[ \t]*\r?\nLab:[ \t]*3\.1\.(?P<lab>" + _LAB_NUMBER + r")")
_LAB_LINE = re.compile(r"^[ \t]*Lab:[ \t]*3\.1\.(?P<lab>\d+)[ \t]*\r?$", re.MULTILINE)


def format_answer(answer: str, lab: int) -> str:
    """The reference shape: ``Answer: <answer>\\nLab: 3.1.<lab>`` (what the datasets contain)."""
    if lab not in LAB_NAMES:
        raise ValueError(f"lab={lab!r}: labs are numbered 0-10")
    return f"Answer: {answer.strip()}\nLab: 3.1.{lab}"


def format_ok(text: str) -> bool:
    """True when ``text`` is exactly an ``Answer:`` line then a ``Lab: 3.1.N`` line (N in 0-10)."""
    return isinstance(text, str) and _FORMAT.fullmatch(text.strip()) is not None


def cited_lab(text: str) -> int | None:
    """The N of the first ``Lab: 3.1.N`` line in ``text`` (any N the line holds), or None."""
    match = _LAB_LINE.search(text or "")
    return int(match.group("lab")) if match else None


def answer_text(text: str) -> str | None:
    """The sentence(s) after ``Answer:`` when ``text`` is well formatted, else None."""
    match = _FORMAT.fullmatch((text or "").strip())
    return match.group("answer") if match else None


def task_metrics(generations: Sequence[str], expected_labs: Sequence[int] | None = None) -> dict[str, Any]:
    """Score generations: ``n``, ``format_rate``, ``cited_rate``, and ``lab_accuracy`` given expected labs."""
    generations = list(generations)
    n = len(generations)
    if n == 0:
        raise ValueError("task_metrics needs at least one generation")
    cited = [cited_lab(g) for g in generations]
    result: dict[str, Any] = {
        "n": n,
        "format_rate": sum(format_ok(g) for g in generations) / n,
        "cited_rate": sum(c is not None for c in cited) / n,
    }
    if expected_labs is not None:
        expected = list(expected_labs)
        if len(expected) != n:
            raise ValueError(f"expected_labs has {len(expected)} entries for {n} generations")
        result["lab_accuracy"] = sum(c == e for c, e in zip(cited, expected, strict=True)) / n
    return result


def reference_answer(row: Mapping[str, Any]) -> str:
    """The reference answer of a row: SFT answer, preference ``chosen``, desirable KTO ``completion``."""
    if row.get("label") is False:
        raise ValueError("an undesirable KTO row (label False) has no reference answer")
    for field in ("messages", "chosen", "completion"):
        if field in row:
            value = row[field]
            if isinstance(value, str):
                return value
            assistant = [m for m in value if m.get("role") == "assistant"]
            if assistant:
                return assistant[-1]["content"]
    raise KeyError(f"row has no reference answer (fields: {sorted(row)}); expected messages, chosen or completion")


def expected_labs(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """The lab number of each row, parsed from its reference answer's ``Lab: 3.1.N`` line."""
    labs = []
    for i, row in enumerate(rows):
        lab = cited_lab(reference_answer(row))
        if lab is None:
            raise ValueError(f"row {i}: the reference answer has no 'Lab: 3.1.N' line: {reference_answer(row)!r}")
        labs.append(lab)
    return labs


REJECTED_KINDS: dict[str, str] = {
    "broken_format": "broken format",
    "wrong_lab": "wrong lab",
    "wrong_fact": "wrong fact or unsafe advice",
}


def rejected_kind(row: Mapping[str, Any], index: int = 0) -> str:
    """What is wrong with a preference pair's rejected answer, read from the pair itself.

    ``broken_format`` when the rejected text fails ``format_ok``; ``wrong_lab`` when it repeats the chosen
    answer but cites another lab; otherwise ``wrong_fact`` (a wrong or unsafe answer in the right shape,
    which only knowledge of the topic can tell apart from the chosen one).
    """
    for field in ("chosen", "rejected"):
        if field not in row:
            raise ValueError(f"row {index}: a preference pair needs 'chosen' and 'rejected'; missing {field!r}.")
    chosen = reference_answer({"chosen": row["chosen"]})
    rejected = reference_answer({"chosen": row["rejected"]})
    if not format_ok(rejected):
        return "broken_format"
    if answer_text(rejected) == answer_text(chosen) and cited_lab(rejected) != cited_lab(chosen):
        return "wrong_lab"
    return "wrong_fact"
