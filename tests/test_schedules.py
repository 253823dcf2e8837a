"""Schedules sized to the data (labhelpers.schedules) and time estimates computed from them (labhelpers.schedules)."""

from __future__ import annotations

import math

import pytest

from labhelpers.arch import arch_spec
from labhelpers.profiles import profile
from labhelpers.schedules import (
    SPARK_BF16_FLOPS,
    Schedule,
    Throughput,
    device_throughput,
    estimate_time,
    flops_per_token,
    pack_rows,
    schedule,
)


@pytest.fixture
def full(monkeypatch, embedded_dir):
    """The full profile's schedule settings, on the embedded model (its tokenizer is offline)."""
    monkeypatch.setenv("LABS_PROFILE", "full")
    monkeypatch.setenv("LABS_MODEL", "embedded")
    return profile(verbose=False)


@pytest.fixture
def lab(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "smoke")
    monkeypatch.delenv("LABS_MODEL", raising=False)
    return profile(verbose=False)


@pytest.fixture(scope="module")
def tokenizer(embedded_dir):
    from labhelpers.models import load_tokenizer

    return load_tokenizer(str(embedded_dir))


def test_pack_rows_is_best_fit_decreasing():
    assert pack_rows([600, 500, 400, 300, 200], 1000) == 2  # 600+400, 500+300+200
    assert pack_rows([100] * 30, 1000) == 3
    assert pack_rows([1500, 10], 1024) == 2  # an over-long example is truncated and fills a row alone
    assert pack_rows([], 1024) == 0
    with pytest.raises(ValueError, match="max_length=0"):
        pack_rows([1], 0)


def test_full_profile_trains_sft_for_one_to_three_epochs_over_the_shipped_rows(full, tokenizer, capsys):
    sched = schedule(full, "sft", tokenizer)
    assert sched.examples == full.sft_train_rows == 1000 and sched.stated_epochs == full.sft_epochs
    assert 1 <= sched.epochs <= 3
    assert sched.steps == math.ceil(full.sft_epochs * sched.rows_per_epoch / (full.batch_size * full.grad_accum))
    assert sched.rows_per_epoch * full.max_length >= sched.tokens  # packed rows hold every token
    out = capsys.readouterr().out
    assert f"{sched.steps} steps x {sched.per_step} per step" in out and "the profile states 2 epochs" in out
    pref = schedule(full, "preference", tokenizer, verbose=False)
    assert pref.rows_per_epoch == 500 and pref.steps == math.ceil(500 * full.pref_epochs / full.pref_batch_size)
    assert 1 <= pref.epochs <= 3


def test_full_profile_presets_take_the_computed_steps(full, tokenizer, tmp_path):
    from labhelpers import training

    steps = schedule(full, "sft", tokenizer, verbose=False).steps
    assert training.sft_config(full, tmp_path).max_steps == steps
    assert training.dpo_config(full, tmp_path).max_steps == schedule(full, "preference", tokenizer,
                                                                     verbose=False).steps


def test_smoke_profile_keeps_its_measured_steps_and_reports_the_epochs(lab, tokenizer, capsys):
    sched = schedule(lab, "sft", tokenizer)
    assert sched.steps == lab.sft_steps == 15 and sched.stated_epochs is None
    assert sched.epochs == pytest.approx(15 * lab.batch_size / sched.rows_per_epoch)
    assert "steps fixed by the smoke profile" in capsys.readouterr().out
    with pytest.raises(ValueError, match="kind='rlhf'"):
        schedule(lab, "rlhf", tokenizer)


def test_flops_per_token_counts_passes_per_method():
    arch = arch_spec("llama-3.1-8b")
    counts = arch.param_counts()
    matmul = counts["linear"] + counts["lm_head"]  # untied: the embedding lookup costs no FLOPs
    assert flops_per_token(arch) == 4 * matmul  # LoRA: forward + input gradients
    assert flops_per_token(arch, full_finetune=True) == 6 * matmul
    assert flops_per_token(arch, gradient_checkpointing=True) == 6 * matmul
    # KTO: the reference on the batch and on its KL rows, and the policy without gradients on the KL rows
    assert flops_per_token(arch, "dpo") == 6 * matmul and flops_per_token(arch, "kto") == 10 * matmul
    assert flops_per_token(arch, "simpo") == flops_per_token(arch, "orpo") == 4 * matmul
    with pytest.raises(ValueError, match="method='ppo'"):
        flops_per_token(arch, "ppo")


def test_attention_flops_grow_with_the_span_and_every_pass():
    arch = arch_spec("llama-3.1-8b")
    per_span = 4 * arch.heads * arch.head_dim * arch.layers  # Q K^T and the weighted sum of V, per token
    base = flops_per_token(arch)
    assert flops_per_token(arch, attention_span=1000) - base == 3 * per_span * 1000  # forward + d(Q, K, V)
    assert flops_per_token(arch, "dpo", attention_span=1000) - flops_per_token(arch, "dpo") == 4 * per_span * 1000
    gc = flops_per_token(arch, gradient_checkpointing=True, attention_span=1000)
    assert gc - flops_per_token(arch, gradient_checkpointing=True) == 4 * per_span * 1000


def test_a_packed_forward_pass_attends_over_all_its_rows():
    common = dict(kind="sft", examples=1000, tokens=100_000, rows_per_epoch=100, per_step=4, steps=50, epochs=2.0,
                  max_length=1024, stated_epochs=2)  # fmt: skip
    one, four = Schedule(**common, packed=True, forward_rows=1), Schedule(**common, packed=True, forward_rows=4)
    assert (one.seq_len, four.seq_len) == (1000, 4000)  # 100,000 tokens in 100 rows: 1,000 per row
    assert Schedule(**common).seq_len == 100  # unpacked: one example of 100 tokens
    spark = Throughput(SPARK_BF16_FLOPS, (0.2, 0.5), "published")
    est1, est4 = (estimate_time(s, "llama-3.1-8b", throughput=spark, verbose=False) for s in (one, four))
    assert est4.flops > est1.flops and est4.flops_per_token - est1.flops_per_token == pytest.approx(
        flops_per_token("llama-3.1-8b", attention_span=3000) - flops_per_token("llama-3.1-8b"))


def test_estimate_is_a_range_from_tokens_flops_and_throughput(capsys):
    sched = Schedule(kind="sft", examples=1000, tokens=100_000, rows_per_epoch=100, per_step=4, steps=50,
                     epochs=2.0, max_length=1024, stated_epochs=2)
    assert sched.trained_tokens == 200_000
    spark = Throughput(SPARK_BF16_FLOPS, (0.2, 0.5), "published")
    est = estimate_time(sched, "llama-3.1-8b", throughput=spark)
    flops = 200_000 * flops_per_token("llama-3.1-8b", attention_span=100 / 2)  # unpacked: causal, half of 100
    assert est.flops == flops
    assert est.low_s == pytest.approx(flops / (125e12 * 0.5)) and est.high_s == pytest.approx(flops / (125e12 * 0.2))
    out = capsys.readouterr().out
    assert "200,000 tokens" in out and "20%-50% of 125 TFLOP/s" in out and "peak: published" in out
    assert est.versus(est.low_s * 1.5).startswith("measured") and "inside the estimate" in est.versus(est.low_s * 1.5)
    assert "slower than the estimate" in est.versus(est.high_s * 2)
    assert "faster than the estimate" in est.versus(est.low_s / 2)


def test_cpu_throughput_is_measured_at_the_models_shape():
    tp = device_throughput(dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=256), device="cpu")
    assert tp.peak_flops > 1e6 and tp.utilisation[0] < tp.utilisation[1]
    assert "512x64x160" in tp.source and "measured now" in tp.source


def test_with_steps_keeps_the_data_and_recomputes_the_epochs():
    sched = Schedule(kind="sft", examples=1000, tokens=75_000, rows_per_epoch=1000, per_step=4, steps=500,
                     epochs=2.0, max_length=1024, stated_epochs=2, packed=False)
    third = sched.with_steps(2 * (sched.steps // 3))  # lab 04: two runs of a third of the schedule
    assert (third.steps, third.tokens, third.per_step) == (332, 75_000, 4)
    assert third.epochs == pytest.approx(332 * 4 / 1000) and third.stated_epochs is None
    assert third.trained_tokens == round(332 * 75_000 / 1000 * 4)
    assert "rows, one example each" in str(third)


def test_grpo_schedule_counts_each_completion_with_its_prompt(lab, full, tokenizer):
    from labhelpers.evaluation import chat_tokens

    sched = schedule(lab, "grpo", tokenizer, verbose=False)
    g = lab.grpo
    assert (sched.steps, sched.per_step, sched.group) == (g.steps, g.prompts_per_step, g.generations)
    rows = list(__import__("labhelpers.data", fromlist=["x"]).load_lab_dataset("sft", limit=lab.sft_train_rows))
    prompt = sum(chat_tokens(tokenizer, r["messages"][:-1], r["messages"][-1:])[1].count(0) for r in rows)
    assert sched.tokens == g.generations * (prompt + len(rows) * g.completion_tokens)
    assert sched.seq_len == pytest.approx(prompt / len(rows) + g.completion_tokens)  # one completion's sequence
    assert sched.trained_tokens == round(g.steps * g.prompts_per_step * sched.tokens / len(rows))
    big = schedule(full, "grpo", tokenizer, verbose=False)  # full: one epoch over the prompts
    assert big.steps == math.ceil(full.grpo.epochs * full.sft_train_rows / full.grpo.prompts_per_step)
    assert "4 completions each" in str(sched) and "8 completions each" in str(big)


def test_grpo_time_is_generation_calls_at_the_measured_decode_rate_plus_the_updates(lab, tokenizer):
    from dataclasses import replace

    from labhelpers.schedules import estimate_grpo_time

    sched = schedule(lab, "grpo", tokenizer, verbose=False)
    cpu = Throughput(1e11, (0.25, 0.8), "test")
    g = lab.grpo  # 8 steps, one generation call of 64 completions
    est = estimate_grpo_time(sched, "llama-3.1-8b", g, 4.0, "measured", throughput=cpu, verbose=False)
    assert est.generation_calls == math.ceil(g.steps / g.steps_per_generation)
    assert est.generation_s == pytest.approx(est.generation_calls * g.completion_tokens / 4.0)
    # one generation feeds several steps: TRL scores the old policy once (+1 forward); beta > 0 adds the reference
    base = estimate_time(sched, "llama-3.1-8b", "grpo", throughput=cpu, verbose=False)
    span = sched.seq_len / 2  # unpacked, causal
    assert est.update.flops_per_token == flops_per_token("llama-3.1-8b", "grpo", attention_span=span, extra_forwards=1)
    assert est.update.flops_per_token > base.flops_per_token
    one = replace(g, steps_per_generation=1, beta=0.04)
    est1 = estimate_grpo_time(sched, "llama-3.1-8b", one, 4.0, "measured", throughput=cpu, verbose=False)
    assert est1.generation_calls == g.steps and est1.update.flops_per_token == est.update.flops_per_token
    assert est.low_s == pytest.approx(est.generation_s + est.update.low_s)
    assert "decode rate: measured" in str(est) and "inside" in est.versus((est.low_s + est.high_s) / 2)
    with pytest.raises(ValueError, match="decode_steps_per_s"):
        estimate_grpo_time(sched, "llama-3.1-8b", g, 0.0, "measured", throughput=cpu)
