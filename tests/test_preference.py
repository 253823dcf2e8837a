"""labhelpers.preference (the before/after evaluation of labs 06-09) and task.rejected_kind."""

from __future__ import annotations

import copy

import pytest
import torch

from labhelpers import evaluation, preference, task


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


ROWS = [
    pair("q1", "Answer: Use LoRA.\nLab: 3.1.3", "Sure! Use LoRA. See lab 3.1.3."),  # broken format
    pair("q2", "Answer: Use LoRA.\nLab: 3.1.3", "Answer: Use LoRA.\nLab: 3.1.7"),  # wrong lab
    pair("q3", "Answer: Rank 16.\nLab: 3.1.1", "Answer: Rank 4096.\nLab: 3.1.1"),  # wrong fact
    pair("q4", "Answer: Never sudo.\nLab: 3.1.0", "Answer: Always sudo.\nLab: 3.1.0"),  # unsafe: same shape
]


def test_rejected_kind_is_read_from_the_pair():
    assert [task.rejected_kind(r, i) for i, r in enumerate(ROWS)] == [
        "broken_format", "wrong_lab", "wrong_fact", "wrong_fact"]


def test_rejected_kind_of_the_shipped_heldout_pairs_covers_every_kind():
    import labhelpers as lh

    rows = lh.load_lab_dataset("preference", split="heldout")
    kinds = {task.rejected_kind(r, i) for i, r in enumerate(rows)}
    assert kinds == set(task.REJECTED_KINDS)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_loaded_preference_pairs_have_the_well_formed_answer_as_chosen(split):
    """Catches chosen and rejected swapped anywhere between the file and the trainer: every chosen answer is
    in the task's format, while about a quarter of the rejected ones are not (the broken-format kind)."""
    import labhelpers as lh

    rows = lh.load_lab_dataset("preference", split=split)
    bad = [i for i, r in enumerate(rows) if not task.format_ok(task.reference_answer(r))]
    assert not bad, f"{len(bad)} loaded pairs have a chosen answer out of format, first rows {bad[:5]}"
    broken = sum(not task.format_ok(r["rejected"][0]["content"]) for r in rows) / len(rows)
    assert 0.15 < broken < 0.35, broken


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_loaded_kto_rows_label_the_well_formed_answers_desirable(split):
    """Catches KTO's labels inverted anywhere between the file and the trainer: every thumbs-up completion is in
    the task's format, while a share of the thumbs-down ones are not (the broken-format kind)."""
    import labhelpers as lh

    rows = lh.load_lab_dataset("kto", split=split)
    up = [r for r in rows if r["label"]]
    down = [r for r in rows if not r["label"]]
    bad = [i for i, r in enumerate(up) if not task.format_ok(r["completion"][0]["content"])]
    assert not bad, f"{len(bad)} thumbs-up rows are out of format, first {bad[:5]}"
    broken = sum(not task.format_ok(r["completion"][0]["content"]) for r in down) / len(down)
    assert broken > 0.15, broken


def test_rejected_kind_names_the_row_and_the_missing_field():
    with pytest.raises(ValueError, match=r"row 7: .*missing 'rejected'"):
        task.rejected_kind({"prompt": "q", "chosen": "a"}, 7)


def scores(margins: list[float]) -> preference.HeldoutScores:
    """Pairs with the given summed margins (chosen -10 nats, 5 tokens per answer) and a fixed task score."""
    from labhelpers.evaluation import log_odds_ratio

    pairs = [{"chosen_logp": -10.0, "rejected_logp": -10.0 - m, "margin": m, "margin_per_token": m / 5,
              "log_odds_ratio": log_odds_ratio(-2.0, (-10.0 - m) / 5)} for m in margins]
    return preference.HeldoutScores(pairs, ["a"], {"n": 1, "format_rate": 0.0, "lab_accuracy": 0.0})


def test_pairs_improved_counts_pairs_whose_margin_grew_not_the_mean():
    # one outlier gains 100 nats; the other three lose a little: the mean rises, most pairs did not improve
    cmp = preference.compare_heldout("dpo", scores([-1, -1, -1, -1]), scores([99, -2, -2, -2]), ROWS)
    assert cmp.after.summary["margin"] > cmp.before.summary["margin"]
    assert cmp.improved == 0.25
    unchanged = preference.compare_heldout("dpo", scores([1, -1, 2, -2]), scores([1, -1, 2, -2]), ROWS)
    assert unchanged.improved == 0.0  # an untrained adapter moves nothing


def test_accuracy_per_kind_and_the_row():
    cmp = preference.compare_heldout("simpo", scores([-1, 1, -1, 1]), scores([1, 1, -1, -1]), ROWS, measure="per_token")
    assert cmp.accuracy("before", "broken_format") == 0.0 and cmp.accuracy("after", "broken_format") == 1.0
    assert cmp.accuracy("before", "wrong_fact") == 0.5 and cmp.accuracy("after", "wrong_fact") == 0.0
    assert cmp.accuracy("after") == 0.5
    assert cmp.improved_in("broken_format") == 1.0 and cmp.improved_in("wrong_fact") == 0.0
    with pytest.raises(ValueError, match="kind must be one of"):
        cmp.improved_in("unsafe")
    no_format = preference.compare_heldout("dpo", scores([1, 1, 1]), scores([2, 2, 2]), ROWS[1:])
    with pytest.raises(ValueError, match="none of the 3 held-out pairs is of kind 'broken_format'"):
        no_format.improved_in("broken_format")
    table = cmp.by_kind()
    assert table.loc["broken format", "pairs"] == 1 and table.loc["all", "pairs improved"] == 0.25
    row = cmp.row(None, beta=2.0)
    assert row["method"] == "simpo" and row["measure"] == "per_token" and row["eval_pairs"] == 4
    assert row["accuracy_broken_format_after"] == 1.0 and row["pairs_improved"] == 0.25 and row["beta"] == 2.0


def test_compare_refuses_different_pairs_and_unknown_measures():
    with pytest.raises(ValueError, match="score the same pairs before and after"):
        preference.compare_heldout("dpo", scores([1, 2, 3, 4]), scores([1, 2, 3]), ROWS)
    with pytest.raises(ValueError, match="measure must be one of"):
        preference.compare_heldout("dpo", scores([1, 2, 3, 4]), scores([1, 2, 3, 4]), ROWS, measure="mean")


def test_count_passes_splits_passes_with_and_without_gradients(tiny_llama):
    import torch

    ids = torch.tensor([[1, 2, 3]])
    with preference.count_passes(tiny_llama) as counts:
        tiny_llama(input_ids=ids)
        with torch.no_grad():
            tiny_llama(input_ids=ids)
            tiny_llama(input_ids=ids)
    tiny_llama(input_ids=ids)  # after the block: not counted (the hook is gone)
    assert counts == {"with_grad": 1, "no_grad": 2, "adapter_off": 0}


def test_scores_are_cached_by_weights_and_recomputed_once_they_change(tiny_llama, tokenizer, tmp_path, monkeypatch,
                                                                      capsys):
    import torch

    import labhelpers as lh

    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    lab = lh.with_overrides(lh.profile(verbose=False), max_length=64, eval_max_new_tokens=2)
    first = preference.score_heldout(tiny_llama, tokenizer, ROWS, lab, n_show=1)
    again = preference.score_heldout(tiny_llama, tokenizer, ROWS, lab, n_show=1)
    assert "read from" in capsys.readouterr().out and again.pairs == first.pairs
    assert len(list((tmp_path / lab.name / "cache" / "preference").glob("*.json"))) == 1
    fingerprint = evaluation.weights_fingerprint(tiny_llama)
    with torch.no_grad():
        tiny_llama.lm_head.weight[0, 0] += 1.0  # "training" changed one weight
    try:
        assert evaluation.weights_fingerprint(tiny_llama) != fingerprint
        preference.score_heldout(tiny_llama, tokenizer, ROWS, lab, n_show=1)
        assert "read from" not in capsys.readouterr().out
    finally:
        with torch.no_grad():
            tiny_llama.lm_head.weight[0, 0] -= 1.0


def test_count_passes_tells_policy_passes_from_adapter_off_reference_passes(tiny_llama):
    from peft import get_peft_model

    from labhelpers.preference import count_passes
    from labhelpers.training import lora_config

    model = get_peft_model(copy.deepcopy(tiny_llama), lora_config(None))
    ids = torch.tensor([[1, 2, 3]])
    with count_passes(model) as forwards:
        model(input_ids=ids)  # policy, trained through
        with torch.no_grad():
            model(input_ids=ids)  # policy, not trained through (KTO's KL rows)
            with model.disable_adapter():
                model(input_ids=ids)  # the reference: same weights, adapter off
    model(input_ids=ids)  # after the block: not counted
    assert forwards == {"with_grad": 1, "no_grad": 2, "adapter_off": 1}
    with count_passes(tiny_llama) as plain, torch.no_grad():  # no adapter at all: nothing is "off"
        tiny_llama(input_ids=ids)
    assert plain == {"with_grad": 0, "no_grad": 1, "adapter_off": 0}


def test_score_cache_key_changes_when_the_scoring_code_changes(tiny_llama, tokenizer, tmp_path, monkeypatch, capsys):
    import inspect

    import labhelpers as lh

    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    lab = lh.with_overrides(lh.profile(verbose=False), max_length=64, eval_max_new_tokens=2)
    preference.score_heldout(tiny_llama, tokenizer, ROWS, lab, n_show=1)
    capsys.readouterr()
    real = inspect.getsource

    def edited(obj):  # the scoring code as if someone had edited evaluation.py
        return real(obj) + ("\n# edited" if obj is preference.evaluation else "")

    hash_before = preference.scoring_code_hash()
    monkeypatch.setattr(inspect, "getsource", edited)
    assert preference.scoring_code_hash() != hash_before
    preference.score_heldout(tiny_llama, tokenizer, ROWS, lab, n_show=1)
    assert "read from" not in capsys.readouterr().out, "a score cached by other code was read back"
    assert len(list((tmp_path / lab.name / "cache" / "preference").glob("*.json"))) == 2
