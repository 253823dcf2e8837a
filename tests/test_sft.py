"""labhelpers.sft (the before/after evaluation of labs 03-05): scores, their cache, the comparison and its row."""

from __future__ import annotations

import math

import pytest
import torch

from labhelpers import evaluation, sft


def row(question: str, answer: str, lab: int) -> dict:
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": f"Answer: {answer}\nLab: 3.1.{lab}"}]}


ROWS = [row("What rank does LoRA use here?", "Rank 16.", 3), row("Why add noise to embeddings?", "NEFTune.", 4),
        row("How does 70B fit?", "4-bit weights.", 5)]


@pytest.fixture
def lab(tmp_path, monkeypatch):
    import labhelpers as lh

    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    return lh.with_overrides(lh.profile(verbose=False), max_length=64, eval_max_new_tokens=2)


def scores(loss: float, formatted: list[bool], right_lab: list[bool]) -> sft.SFTScores:
    """Scores of len(formatted) answers with the given format and lab flags (what task_metrics would give)."""
    n = len(formatted)
    metrics = {"n": n, "format_rate": sum(formatted) / n, "cited_rate": sum(formatted) / n,
               "lab_accuracy": sum(right_lab) / n}
    return sft.SFTScores(loss, ["Answer: a\nLab: 3.1.3" if f else "prose" for f in formatted], metrics, n)


def test_score_sft_measures_the_loss_and_answers_every_prompt(tiny_llama, tokenizer, lab):
    got = sft.score_sft(tiny_llama, tokenizer, ROWS, lab, cache=False)
    assert got.rows == 3 and len(got.answers) == 3 and got.metrics["n"] == 3
    assert got.loss == pytest.approx(evaluation.heldout_loss(tiny_llama, tokenizer, ROWS, max_length=64))
    assert got.format_rate == 0.0 and got.lab_accuracy == 0.0  # random weights, 2 new tokens: no Answer/Lab lines
    shown = sft.score_sft(tiny_llama, tokenizer, ROWS, lab, n_show=1, cache=False)
    assert len(shown.answers) == 1 and shown.metrics["n"] == 1 and shown.rows == 3 and shown.loss == got.loss


def test_scores_are_cached_by_weights_and_recomputed_once_they_change(tiny_llama, tokenizer, lab, tmp_path, capsys):
    first = sft.score_sft(tiny_llama, tokenizer, ROWS, lab)
    assert "read from" not in capsys.readouterr().out
    again = sft.score_sft(tiny_llama, tokenizer, ROWS, lab)
    assert "read from" in capsys.readouterr().out and again == first
    assert len(list((tmp_path / lab.name / "cache" / "sft").glob("*.json"))) == 1
    sft.score_sft(tiny_llama, tokenizer, ROWS[:2], lab)  # other rows: another key
    assert "read from" not in capsys.readouterr().out
    with torch.no_grad():
        tiny_llama.lm_head.weight[0, 0] += 1.0  # "training" changed one weight
    try:
        sft.score_sft(tiny_llama, tokenizer, ROWS, lab)
        assert "read from" not in capsys.readouterr().out, "scores of other weights were read back"
    finally:
        with torch.no_grad():
            tiny_llama.lm_head.weight[0, 0] -= 1.0
    assert len(list((tmp_path / lab.name / "cache" / "sft").glob("*.json"))) == 3


def test_score_cache_key_changes_when_the_scoring_code_changes(tiny_llama, tokenizer, lab, monkeypatch, capsys):
    import inspect

    sft.score_sft(tiny_llama, tokenizer, ROWS, lab)
    capsys.readouterr()
    real = inspect.getsource

    def edited(obj):  # the scoring code as if someone had edited score_sft
        return real(obj) + ("\n# edited" if obj is sft.score_sft else "")

    hash_before = sft.scoring_code_hash()
    monkeypatch.setattr(inspect, "getsource", edited)
    assert sft.scoring_code_hash() != hash_before
    sft.score_sft(tiny_llama, tokenizer, ROWS, lab)
    assert "read from" not in capsys.readouterr().out, "a score cached by other code was read back"


def test_the_row_holds_the_measured_figures_and_the_training_summary():
    from labhelpers.training import TrainSummary

    cmp = sft.compare_sft("lora_sft", scores(4.0, [False] * 3, [False] * 3), scores(2.0, [True, True, False],
                                                                                      [True, False, False]), ROWS)
    assert cmp.loss_drop == 0.5
    assert cmp.row() == {"method": "lora_sft", "eval_rows": 3, "heldout_loss_before": 4.0, "heldout_loss_after": 2.0,
                         "format_rate_before": 0.0, "format_rate_after": 2 / 3, "lab_accuracy_before": 0.0,
                         "lab_accuracy_after": 1 / 3}
    summary = TrainSummary(wall_time_s=12.0, steps=15, start_step=0, final_loss=1.0, tokens_per_s=math.nan,
                           trained_tokens=0, nonpad_fraction=1.0, peak_memory_bytes=2_000_000_000,
                           memory_delta_bytes=0, resumed_from=None, stopped_by_nan=False)
    row = cmp.row(summary, wall_time_s=20.0, note=None)
    assert row["peak_memory_gb"] == 2.0 and row["steps"] == 15 and row["wall_time_s"] == 20.0  # extra wins
    assert "tokens_per_s" not in row and "note" not in row  # non-finite and missing figures are left out
    import labhelpers as lh

    assert lh.save_result(row).is_file()  # the results table accepts it as it is


def test_a_run_that_made_things_worse_reports_a_negative_drop():
    worse = sft.compare_sft("broken", scores(2.0, [True] * 3, [True] * 3), scores(3.0, [False] * 3, [False] * 3), ROWS)
    assert worse.loss_drop == -0.5
    table = worse.table()
    assert list(table.columns) == ["before", "after", "change"]
    assert table["change"].tolist() == [1.0, -1.0, -1.0, -1.0]  # loss up; format, lab, cited rates down


def test_compare_refuses_scores_of_different_rows():
    three, two = scores(2.0, [True] * 3, [True] * 3), scores(2.0, [True] * 2, [True] * 2)
    with pytest.raises(ValueError, match="score the same rows before and after"):
        sft.compare_sft("lora_sft", three, two, ROWS)
    with pytest.raises(ValueError, match=r"the held-out set has 2: score the same rows"):
        sft.compare_sft("lora_sft", three, three, ROWS[:2])
    with pytest.raises(ValueError, match="score_sft: the held-out set is empty"):
        sft.score_sft(None, None, [], None)


def test_side_by_side_and_plot_show_the_first_prompts(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda: None)
    cmp = sft.compare_sft("lora_sft", scores(4.0, [False] * 3, [False] * 3), scores(2.0, [True] * 3, [True] * 3),
                          ROWS)
    table = cmp.side_by_side(n=2)
    assert table["prompt"].tolist() == ["What rank does LoRA use here?", "Why add noise to embeddings?"]
    assert table["before"].tolist() == ["prose", "prose"]
    assert table["reference"][1] == "Answer: NEFTune. Lab: 3.1.4"  # one line per cell
    fig = cmp.plot()
    assert len(fig.axes) == 2
    plt.close(fig)
