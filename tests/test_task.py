"""The task metric: the checkable ``Answer: ...`` / ``Lab: 3.1.N`` format the datasets teach."""

from __future__ import annotations

import pytest

from labhelpers.task import (
    LAB_NAMES,
    answer_text,
    cited_lab,
    expected_labs,
    format_answer,
    format_ok,
    reference_answer,
    task_metrics,
)

GOOD = "Answer: Set cpo_alpha=0.0 for pure SimPO.\nLab: 3.1.7"


def test_there_are_eleven_labs_numbered_0_to_10():
    assert sorted(LAB_NAMES) == list(range(11))


@pytest.mark.parametrize("text", [
    GOOD,
    GOOD + "  \n\n",
    "\n " + GOOD,
    "Answer: Merge, convert, quantize, import. Then test it.\nLab: 3.1.10",
    "Answer: It runs in a terminal.\r\nLab: 3.1.0",
    "Answer:  extra spaces are fine \nLab:  3.1.5  ",
])
def test_format_ok_accepts_the_two_line_shape_with_surrounding_whitespace(text):
    assert format_ok(text)


@pytest.mark.parametrize("text, why", [
    ("Set cpo_alpha=0.0 for pure SimPO.\nLab: 3.1.7", "no Answer: prefix"),
    ("Answer: Set cpo_alpha=0.0 for pure SimPO.", "no Lab line"),
    ("Answer: Set cpo_alpha=0.0.\nLab: 3.1.07", "leading zero"),
    ("Answer: Set cpo_alpha=0.0.\nLab: 3.1.11", "no lab 11"),
    ("Answer: Set cpo_alpha=0.0.\nLab: 3.2.7", "wrong module"),
    ("Answer: Set cpo_alpha\n=0.0.\nLab: 3.1.7", "answer split over lines"),
    ("Answer: \nLab: 3.1.7", "empty answer"),
    ("Lab: 3.1.7\nAnswer: Set cpo_alpha=0.0.", "lines swapped"),
    (GOOD + "\nHope this helps!", "text after the Lab line"),
    ("Sure! " + GOOD, "text before Answer"),
    ("Answer: Set cpo_alpha=0.0.\n\nLab: 3.1.7", "blank line between"),
    ("Answer: Set cpo_alpha=0.0. (Lab 3.1.7)", "lab inline"),
    ("", "empty"),
])
def test_format_ok_rejects_anything_else(text, why):
    assert not format_ok(text), why


def test_format_ok_is_false_for_non_strings():
    assert not format_ok(None)  # type: ignore[arg-type]


def test_cited_lab_reads_the_lab_line_even_when_the_format_is_off():
    assert cited_lab(GOOD) == 7
    assert cited_lab("Sure! Here you go.\nLab: 3.1.10\nMore text") == 10
    assert cited_lab("Answer: x\nLab: 3.1.05") == 5


def test_cited_lab_is_none_without_a_lab_line():
    assert cited_lab("Answer: see lab 3.1.7") is None
    assert cited_lab("Lab 3.1.7: use CPOTrainer") is None
    assert cited_lab("") is None


def test_answer_text_returns_the_sentence_only_when_well_formatted():
    assert answer_text(GOOD) == "Set cpo_alpha=0.0 for pure SimPO."
    assert answer_text("Set cpo_alpha=0.0.") is None


def test_format_answer_builds_what_format_ok_accepts():
    text = format_answer("  Use bf16.  ", 3)
    assert text == "Answer: Use bf16.\nLab: 3.1.3" and format_ok(text)


def test_format_answer_rejects_a_lab_outside_0_to_10():
    with pytest.raises(ValueError, match="labs are numbered 0-10"):
        format_answer("x", 11)


def test_task_metrics_counts_format_citations_and_lab_accuracy():
    gens = [GOOD, "Answer: Use KTO.\nLab: 3.1.9", "Use KTO. Lab: 3.1.9", "Sure!\nLab: 3.1.6"]
    m = task_metrics(gens, expected_labs=[7, 8, 9, 6])
    assert m == {"n": 4, "format_rate": 0.5, "cited_rate": 0.75, "lab_accuracy": 0.5}


def test_task_metrics_without_expected_labs_has_no_lab_accuracy():
    assert "lab_accuracy" not in task_metrics([GOOD])


def test_task_metrics_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="expected_labs has 1 entries for 2 generations"):
        task_metrics([GOOD, GOOD], expected_labs=[7])
    with pytest.raises(ValueError, match="at least one generation"):
        task_metrics([])


def test_expected_labs_parses_reference_answers_of_each_kind():
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": GOOD}]},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": GOOD}],
         "rejected": [{"role": "assistant", "content": "Answer: x\nLab: 3.1.2"}]},
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": GOOD}],
         "label": True},
    ]
    assert expected_labs(rows) == [7, 7, 7]


def test_expected_labs_names_the_row_without_a_lab_line():
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no lab"}]}]
    with pytest.raises(ValueError, match="row 0: the reference answer has no 'Lab: 3.1.N' line"):
        expected_labs(rows)


def test_an_undesirable_kto_row_has_no_reference_answer():
    row = {"prompt": [{"role": "user", "content": "q"}],
           "completion": [{"role": "assistant", "content": GOOD}], "label": False}
    with pytest.raises(ValueError, match="undesirable KTO row"):
        reference_answer(row)
