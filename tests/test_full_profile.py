"""The full profile's trainers, built as each training lab builds them, for 2 steps on the tiny Llama 3.1.

What a learner runs on a Spark is the full profile (``LABS_PROFILE=full``): its own batch, ``max_length`` 1,024,
epochs turned into steps by ``lh.schedule``, learning rates, schedule and warmup, packing, lab 05's gradient
checkpointing and optimizer. No test here writes those values down: each reads them from ``lh.profile()``,
builds the lab's TRL arguments with ``labhelpers.training`` exactly as the lab's cells do
(``tests/lab_trainers.py``, which ``bench/gpu_check.py`` runs on a GPU too), asserts the built
arguments equal the profile's values, then overrides ``max_steps`` alone (to 2) and trains on the lab's own data
slice with the tiny Llama 3.1 model of the family matrix (``tests/family_models.py``: Llama 3.1's real
128,256-token tokenizer and chat template, random weights). A packed SFT step is 4 rows of up to 1,024 tokens in
one sequence: its fp32 logits and their gradients are about 6 GB, so these tests run one after another.
"""

from __future__ import annotations

import math

import lab_trainers
import pytest
import torch
from family_models import build_family
from lab_trainers import LAB_05_OPTIMIZER_ON_CPU

import labhelpers as lh
from labhelpers import preference, training

TWO = 2  # the only value a test changes: max_steps


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The full profile with its model (and lab 05's big model) pointed at the tiny Llama 3.1, outputs in tmp."""
    folder = build_family("llama3.1", tmp_path_factory.mktemp("llama3.1") / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABS_PROFILE", "full")
        mp.setenv("LABS_MODEL", str(folder))
        mp.setenv("LABS_OUTPUT_DIR", str(tmp_path_factory.mktemp("outputs")))
        mp.delenv("LABS_SEED", raising=False)
        prof = lh.profile(verbose=False)
        assert prof.name == "full" and not prof.is_smoke and prof.max_length == 1024
        yield prof


def _lr_scheduler(args) -> str:
    return str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))


def assert_common(args, lab, *, steps: int, batch: int, learning_rate: float, accum: int | None = None) -> None:
    """The arguments every full-profile preset shares, each against the profile (or the schedule) it comes from."""
    assert args.max_steps == steps
    assert args.per_device_train_batch_size == batch
    assert args.gradient_accumulation_steps == (lab.grad_accum if accum is None else accum)
    assert args.learning_rate == learning_rate and _lr_scheduler(args) == lab.lr_scheduler
    assert args.warmup_steps == lab.warmup_ratio and args.max_length == lab.max_length
    assert args.seed == lab.seed and args.bf16 is torch.cuda.is_available()
    # the full profile logs every 5 steps; checkpoints fall on logged steps, at least two of them before the end
    if args.save_strategy == "steps":
        assert args.logging_steps == 5 and args.save_steps % 5 == 0 and 2 <= steps // args.save_steps <= 10


def only_steps_changed(args, short) -> None:
    """The 2-step arguments are the lab's arguments with max_steps changed, nothing else."""
    full_args, two = args.to_dict(), short.to_dict()
    assert two.pop("max_steps") == TWO and full_args.pop("max_steps") > TWO
    assert two == full_args


def run_two_steps(trainer) -> training.TrainSummary:
    summary = training.train(trainer, resume=False, label="2 full-profile steps")
    assert summary.steps == TWO and summary.final_loss is not None and math.isfinite(summary.final_loss)
    assert not summary.stopped_by_nan
    return summary


# ------------------------------------------------------------------------------------------ SFT: labs 03, 04, 05
def test_lab03_lora_sft_trains_at_the_full_shape(full, tmp_path):
    run = lab_trainers.lab03_sft(full, tmp_path, TWO)
    plan, args = run.plan, run.args
    assert run.extra["rows"] == full.sft_train_rows
    assert plan.stated_epochs == full.sft_epochs and plan.packed and plan.max_length == full.max_length
    assert_common(args, full, steps=plan.steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                  learning_rate=full.learning_rate)
    assert full.sft_forward_rows * full.sft_accum == full.batch_size * full.grad_accum == plan.per_step
    assert args.packing and args.packing_strategy == "bfd" and args.padding_free and not args.gradient_checkpointing
    only_steps_changed(args, run.short)
    summary = run_two_steps(run.trainer)
    per_step = summary.trained_tokens / summary.steps
    assert per_step >= 1000, f"a packed full-profile step trained {per_step:.0f} tokens"
    assert per_step <= full.batch_size * full.grad_accum * full.max_length


def test_lab04_neftune_runs_train_unpacked_with_noise(full, tmp_path):
    run = lab_trainers.lab04_neftune(full, tmp_path, TWO)
    plan, steps = run.plan, run.extra["lab_steps"]
    assert steps == max(1, plan.steps // 3)
    assert not plan.packed and plan.rows_per_epoch == full.sft_train_rows
    assert list(run.extra["configs"]) == ["without", "with"]
    for alpha, args, short in run.extra["configs"].values():
        assert_common(args, full, steps=steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                      learning_rate=full.learning_rate)
        assert not args.packing and not args.padding_free and args.neftune_noise_alpha == alpha
        only_steps_changed(args, short)
    assert run.short.neftune_noise_alpha == 5.0  # the trainer trains the run with noise
    run_two_steps(run.trainer)


def test_lab05_qlora_trains_with_checkpointing_and_the_cpu_optimizer(full, tmp_path):
    on_gpu = torch.cuda.is_available()
    run = lab_trainers.lab05_qlora(full, tmp_path, TWO)
    plan, args, optim, run_plan = run.plan, run.args, run.extra["optim"], run.extra["memory_plan"]
    assert optim == ("paged_adamw_8bit" if on_gpu else LAB_05_OPTIMIZER_ON_CPU)
    assert (run_plan.batch, run_plan.seq_len, run_plan.rank) == (full.sft_forward_rows, full.max_length, full.lora_rank)
    assert type(run.extra["model"].model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert_common(args, full, steps=plan.steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                  learning_rate=full.learning_rate)  # full: the whole schedule (smoke trains a third of it)
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert str(getattr(args.optim, "value", args.optim)) == optim and args.packing
    only_steps_changed(args, run.short)
    summary = run_two_steps(run.trainer)
    assert summary.trained_tokens / summary.steps >= 1000


# ------------------------------------------------------------------------------------------ preference: labs 06-09
@pytest.mark.parametrize("lab_name", list(lab_trainers.PREFERENCE_LABS))
def test_labs_06_to_08_preference_trainers_at_the_full_shape(full, lab_name, tmp_path):
    run = lab_trainers.lab_preference(lab_name, full, tmp_path, TWO)
    plan, config = run.plan, run.args
    assert plan.stated_epochs == full.pref_epochs and plan.rows_per_epoch == full.pref_train_rows
    lr = full.orpo_learning_rate or full.pref_learning_rate if lab_name == "08_orpo" else full.pref_learning_rate
    assert_common(config, full, steps=plan.steps, batch=full.pref_batch_size, learning_rate=lr)
    if lab_name == "08_orpo":
        assert config.beta == full.orpo_lambda
    only_steps_changed(config, run.short)
    run_two_steps(run.trainer)


def test_lab09_kto_trainer_at_the_full_shape(full, tmp_path):
    run = lab_trainers.lab09_kto(full, tmp_path, TWO)
    plan, config = run.plan, run.args
    assert plan.stated_epochs == full.pref_epochs and plan.rows_per_epoch == full.kto_train_rows
    assert_common(config, full, steps=plan.steps, batch=full.pref_batch_size, learning_rate=full.pref_learning_rate)
    only_steps_changed(config, run.short)
    with preference.count_passes(run.trainer.model) as forwards:
        run_two_steps(run.trainer)
    assert forwards["with_grad"] == TWO and forwards["adapter_off"] >= TWO


def test_lab12_grpo_trainer_at_the_full_shape(full, tmp_path):
    run = lab_trainers.lab12_grpo(full, tmp_path, TWO)
    g, config = full.grpo, run.args
    assert run.plan.stated_epochs == g.epochs and run.plan.steps == math.ceil(g.epochs * full.sft_train_rows /
                                                                              g.prompts_per_step)
    assert config.max_steps == run.plan.steps and config.per_device_train_batch_size == g.completions_per_step
    assert (config.num_generations, config.max_completion_length, config.learning_rate) == (
        g.generations, g.completion_tokens, g.learning_rate)
    assert _lr_scheduler(config) == full.lr_scheduler and config.seed == full.seed
    only_steps_changed(config, run.short)
    summary = training.train(run.trainer, resume=False, label="2 full-profile GRPO steps")
    assert summary.steps == TWO and not summary.stopped_by_nan
    rewards = [h["reward"] for h in summary.log_history if "reward" in h]
    assert rewards and all(math.isfinite(r) for r in rewards)  # generated, scored: a random tiny model scores 0


# ------------------------------------------------------------------------------------------ lab 11
def test_lab11_rank_trains_the_full_profile_sft(full, tmp_path):
    """``distributed.run`` (what each rank of lab 11's ``accelerate launch`` runs), one process, full profile."""
    from labhelpers import distributed

    record = distributed.run("sft", tmp_path / "run", max_steps=TWO, rows=32, verbose=False)
    assert record["steps"] == TWO and record["world_size"] == 1 and record["saved"]
    assert record["global_batch"] == full.batch_size * full.grad_accum
    assert all(math.isfinite(x) for x in record["losses"]) and (tmp_path / "run" / "adapter").is_dir()
    cmd = distributed.launch_command(tmp_path / "run", method="sft", num_processes=2, max_steps=10, rows=32)
    assert cmd[cmd.index("--max-steps") + 1] == "10"  # lab 11 cell 1: STEPS = 10 on the full profile
