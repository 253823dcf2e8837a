"""labhelpers.evaluation: answer-only held-out loss, preference accuracy/margins, side-by-side tables."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402

from labhelpers.evaluation import chat_tokens, heldout_loss, preference_metrics, side_by_side  # noqa: E402


def sft_row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"Answer: {2 * i}\nLab: 3.1.{i}"}]}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    from labhelpers.models import load_model

    return load_model("model")


def test_chat_tokens_masks_everything_but_the_answer(tokenizer):
    ids, mask = chat_tokens(
        tokenizer, [{"role": "user", "content": "What is 2 plus 2?"}], "Answer: 4\nLab: 3.1.2"
    )
    assert len(ids) == len(mask) and mask[0] == 0
    answer = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert answer == "Answer: 4\nLab: 3.1.2<|im_end|>\n"  # the end-of-turn token is part of the answer
    assert "What is 2 plus 2?" in tokenizer.decode(ids)


def test_heldout_loss_is_finite_deterministic_and_batch_independent(model, tokenizer):
    ds = Dataset.from_list([sft_row(i) for i in range(1, 4)])
    first = heldout_loss(model, tokenizer, ds, batch_size=3)
    assert math.isfinite(first) and first > 0
    assert heldout_loss(model, tokenizer, ds, batch_size=3) == first
    assert heldout_loss(model, tokenizer, ds, batch_size=1) == pytest.approx(first, rel=1e-4)
    prompt_completion = Dataset.from_list(
        [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in map(sft_row, range(1, 4))]
    )
    assert heldout_loss(model, tokenizer, prompt_completion, batch_size=3) == pytest.approx(first, rel=1e-6)


def test_heldout_loss_drops_after_a_few_training_steps(tiny_llama, tokenizer, tmp_path):
    from trl import SFTTrainer

    from labhelpers import training as T
    from labhelpers.profiles import profile

    lab = profile(verbose=False)
    ds = Dataset.from_list([sft_row(i) for i in range(4)])
    model = copy.deepcopy(tiny_llama)
    before = heldout_loss(model, tokenizer, ds)
    args = T.sft_config(lab, tmp_path, max_steps=4, learning_rate=5e-3, per_device_train_batch_size=4,
                        save_strategy="no", logging_steps=1)  # fmt: skip
    rows = T.as_prompt_completion(ds)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows,
                         processing_class=tokenizer, peft_config=T.lora_config(lab))  # fmt: skip
    trainer.train()
    trainer.model.train()
    after = heldout_loss(trainer.model, tokenizer, ds)
    assert trainer.model.training  # heldout_loss evaluates in eval mode, then restores training mode
    # before training the adapter is a no-op, so step 1's training loss is the same answer-only mean
    assert trainer.state.log_history[0]["loss"] == pytest.approx(before, rel=1e-3)
    # and after training it agrees with TRL's own evaluation loss on the same rows (padding-free, packed)
    assert trainer.evaluate(rows)["eval_loss"] == pytest.approx(after, rel=1e-3)
    assert after < before - 0.2, (before, after)


def test_heldout_loss_names_the_bad_row(model, tokenizer):
    rows = [sft_row(1), {"messages": [{"role": "user", "content": "no answer"}]}]
    with pytest.raises(ValueError, match="row 1, field 'messages'"):
        heldout_loss(model, tokenizer, rows)
    with pytest.raises(ValueError, match="row 0: no answer tokens left"):
        heldout_loss(model, tokenizer, [sft_row(1)], max_length=8)


def preference_rows() -> list[dict]:
    facts = [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("How many days are in a week?", "There are seven days in a week."),
        ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ]
    garbage = ["zq vv plorkt snib !!", "xx blorf qwv jjk ~", "mnx pq zzt vrrk ;;"]
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": g}],
        }  # fmt: skip
        for (q, a), g in zip(facts, garbage, strict=True)
    ]


def test_preference_metrics_prefer_the_reference_answer_to_garbage(model, tokenizer):
    from peft import get_peft_model

    from labhelpers.training import lora_config

    plain = preference_metrics(model, tokenizer, preference_rows(), batch_size=4)
    assert plain["n"] == 3 and plain["accuracy"] == 1.0 and plain["accuracy_per_token"] == 1.0
    assert plain["margin"] > 0 and plain["margin_per_token"] > 0
    assert plain["chosen_logp"] > plain["rejected_logp"]
    peft_model = get_peft_model(model, lora_config(None))  # fresh adapter (B = 0): same scores, adapter on
    try:
        with_adapter = preference_metrics(peft_model, tokenizer, preference_rows(), batch_size=4)
    finally:
        peft_model.unload()
    assert with_adapter["margin"] == pytest.approx(plain["margin"], rel=1e-4)


def test_preference_pairs_are_the_per_pair_view_of_the_metrics(model, tokenizer):
    from labhelpers.evaluation import preference_pairs, summarize_pairs

    rows = preference_rows()
    pairs = preference_pairs(model, tokenizer, rows, batch_size=2)
    assert len(pairs) == len(rows)
    for pair, row in zip(pairs, rows, strict=True):
        alone = preference_metrics(model, tokenizer, [row])  # batch of one: no padding at all
        assert pair["margin"] == pytest.approx(alone["margin"], abs=1e-3)
        assert pair["margin"] == pytest.approx(pair["chosen_logp"] - pair["rejected_logp"])
    means = summarize_pairs(pairs)
    assert means == pytest.approx(preference_metrics(model, tokenizer, rows, batch_size=2))
    with pytest.raises(ValueError, match="no pairs"):
        summarize_pairs([])


def test_completion_logps_score_unpaired_rows_as_the_pairs_do(model, tokenizer):
    from labhelpers.evaluation import completion_logps, preference_pairs

    rows = preference_rows()
    unpaired = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
                for r in rows for side in ("chosen", "rejected")]  # fmt: skip
    logps = completion_logps(model, tokenizer, unpaired, batch_size=4)
    pairs = preference_pairs(model, tokenizer, rows, batch_size=4)
    assert logps[0::2] == pytest.approx([p["chosen_logp"] for p in pairs], abs=1e-3)
    assert logps[1::2] == pytest.approx([p["rejected_logp"] for p in pairs], abs=1e-3)
    assert completion_logps(model, tokenizer, unpaired, batch_size=1) == pytest.approx(logps, abs=1e-3)
    with pytest.raises(ValueError, match="completion_logps: the dataset is empty"):
        completion_logps(model, tokenizer, [])
    with pytest.raises(ValueError, match=r"row 1: expected a 'messages' field or 'prompt' \+ 'completion'"):
        completion_logps(model, tokenizer, [unpaired[0], {"prompt": "no answer"}])


def test_token_logps_sum_over_the_answer_is_the_pair_score(model, tokenizer):
    from labhelpers.evaluation import preference_pairs, token_logps

    row = preference_rows()[0]
    pair = preference_pairs(model, tokenizer, [row])[0]
    for side in ("chosen", "rejected"):
        ids, mask = chat_tokens(tokenizer, row["prompt"], row[side])
        logps = token_logps(model, [ids])[0]
        assert logps.shape == (len(ids) - 1,) and bool((logps <= 0).all())
        assert torch.allclose(token_logps(model, [ids], last=5)[0], logps[-5:], atol=1e-5)  # the answer's end only
        answer = torch.tensor(mask[1:], dtype=torch.bool)  # token t is predicted from position t-1
        assert float(logps[answer].sum()) == pytest.approx(pair[f"{side}_logp"], abs=1e-3)
    with pytest.raises(ValueError, match="needs at least 2 tokens"):
        token_logps(model, [ids, ids[:1]])


def test_preference_metrics_names_the_missing_field(model, tokenizer):
    rows = preference_rows()
    del rows[1]["rejected"]
    with pytest.raises(ValueError, match=r"row 1: preference rows need .*missing \['rejected'\]"):
        preference_metrics(model, tokenizer, rows)


def test_side_by_side_table_and_text():
    prompts = ["What is 2 plus 2?", [{"role": "user", "content": "Name a lab."}]]
    frame = side_by_side(
        prompts, ["4?", "dunno"], ["Answer: 4\nLab: 3.1.2", "Lab 3.1.6" * 20], reference=["a", "b"]
    )
    assert list(frame.columns) == ["prompt", "before", "after", "reference"]
    assert frame.loc[1, "prompt"] == "Name a lab." and len(frame.loc[1, "after"]) == 80
    assert frame.loc[0, "after"] == "Answer: 4 Lab: 3.1.2"  # whitespace folded onto one line
    text = side_by_side(prompts, ["4?", "dunno"], ["4", "x"], as_text=True)
    assert text.splitlines()[0].split(" | ")[0].strip() == "prompt" and len(text.splitlines()) == 4
    with pytest.raises(ValueError, match="one entry per prompt"):
        side_by_side(prompts, ["only one"], ["a", "b"])


def test_scoring_is_one_padded_pass_per_batch_and_matches_each_sequence_alone(model, tokenizer):
    """A batch of prompt + answer sequences of different lengths runs as one left-padded forward pass; every score
    equals the sequence scored alone (no padding), whatever the batch size."""
    from labhelpers.evaluation import completion_logps, token_logps

    pairs = preference_rows()
    rows = [{"prompt": r["prompt"], "completion": r[side]} for r in pairs for side in ("chosen", "rejected")]
    rows.append({"prompt": [{"role": "user", "content": "A much longer question, " * 6 + "alone?"}],
                 "completion": [{"role": "assistant", "content": "Answer: yes\nLab: 3.1.2"}]})  # fmt: skip
    alone = []
    for row in rows:
        ids, mask = chat_tokens(tokenizer, row["prompt"], row["completion"])
        alone.append(float(token_logps(model, [ids])[0][torch.tensor(mask[1:], dtype=torch.bool)].sum()))
    passes = []
    handle = model.get_decoder().register_forward_pre_hook(lambda m, a, kw: passes.append(kw["input_ids"].shape),
                                                           with_kwargs=True)
    try:
        for batch_size in (1, 2, 16):
            passes.clear()
            scores = completion_logps(model, tokenizer, rows, batch_size=batch_size)
            assert scores == pytest.approx(alone, abs=1e-3), f"batch_size={batch_size}"
            assert len(passes) == -(-len(rows) // batch_size), (batch_size, passes)
    finally:
        handle.remove()
    assert passes[0][0] == len(rows)  # batch_size 16: every row in one pass


def test_log_odds_ratio_is_orpos_formula_with_the_per_token_margins_sign():
    from labhelpers.evaluation import log_odds_ratio

    for m_c, m_r in ((-0.5, -1.5), (-2.0, -0.3), (-0.01, -0.02)):
        odds = [math.exp(m) / (1 - math.exp(m)) for m in (m_c, m_r)]
        assert log_odds_ratio(m_c, m_r) == pytest.approx(math.log(odds[0] / odds[1]), rel=1e-9)
        assert (log_odds_ratio(m_c, m_r) > 0) == (m_c > m_r)
    # both answers rise by the same 0.1 nats/token: the per-token margin stays, the odds ratio grows (chosen likelier)
    assert log_odds_ratio(-0.4, -1.4) > log_odds_ratio(-0.5, -1.5)
    assert math.isfinite(log_odds_ratio(0.0, -1.0))  # p = 1 after float rounding: clamped, not log(0)


def test_sampled_groups_reweight_the_same_samples_toward_a_policy(model, tokenizer):
    from labhelpers.evaluation import sample_groups

    rows = [{"prompt": [{"role": "user", "content": f"Name a number near {i}."}], "target": str(i)} for i in (3, 7)]

    def has_digit(completions, target, **_):
        return [1.0 if any(ch.isdigit() for ch in c[0]["content"]) else 0.0 for c in completions]

    def long(completions, **_):
        return [float(len(c[0]["content"]) > 20) for c in completions]

    groups = sample_groups(model, tokenizer, rows, [has_digit, long], [1.0, 0.5], k=4, max_new_tokens=12, seed=3)
    assert groups.k == 4 and len(groups.rewards) == 2 and groups.rows == 8 and groups.decode_steps == 12
    assert all(r in (0.0, 0.5, 1.0, 1.5) for g in groups.rewards for r in g)
    again = sample_groups(model, tokenizer, rows, [has_digit, long], [1.0, 0.5], k=4, max_new_tokens=12, seed=3)
    assert again.completions == groups.completions  # seeded: the same samples
    # the sampling policy itself re-weights every sample by 1: its expected reward is the plain mean, no shift
    same = groups.rescore(model, tokenizer)
    assert sum(same, []) == pytest.approx(sum(groups.logps, []), abs=1e-4)
    assert groups.reweighted(same) == pytest.approx(groups.expected_reward, abs=1e-5)
    assert groups.margins(same) == pytest.approx(groups.margins(), abs=1e-4)
    # a policy that makes one sample of each prompt far likelier moves the estimate to that sample's reward
    likelier = [[lp + (100.0 if j == 0 else 0.0) for j, lp in enumerate(g)] for g in groups.logps]
    assert groups.reweighted(likelier) == pytest.approx([g[0] for g in groups.rewards], abs=1e-6)
    expected_shift = [(r[0] - sum(r) / 4) * 100.0 / n[0] for r, n in zip(groups.rewards, groups.lengths, strict=False)]
    shift = [a - b for a, b in zip(groups.margins(likelier), groups.margins(), strict=False)]
    assert shift == pytest.approx(expected_shift)
    # a drift of every token's log-prob by the same amount shifts no preference, whatever the lengths
    drift = [[lp - 0.5 * n for lp, n in zip(g, ns, strict=False)]
             for g, ns in zip(groups.logps, groups.lengths, strict=False)]
    assert groups.margins(drift) == pytest.approx(groups.margins(), abs=1e-9)
    assert 0.0 <= groups.zero_spread <= 1.0
    with pytest.raises(ValueError, match="row 1 has no 'prompt'"):
        sample_groups(model, tokenizer, [rows[0], {"x": 1}], [has_digit], [1.0], k=2, max_new_tokens=4)
