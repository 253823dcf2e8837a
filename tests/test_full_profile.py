"""The full profile's trainers, built as each training lab builds them, for 2 steps on the tiny Llama 3.1.

What a learner runs on a Spark is the full profile (``LABS_PROFILE=full``): its own batch, ``max_length`` 1,024,
epochs turned into steps by ``lh.schedule``, learning rates, schedule and warmup, packing, lab 05's gradient
checkpointing and optimizer. No test here writes those values down: each reads them from ``lh.profile()``,
builds the lab's TRL arguments with ``labhelpers.training`` exactly as the lab's cells do, asserts the built
arguments equal the profile's values, then overrides ``max_steps`` alone (to 2) and trains on the lab's own data
slice with the tiny Llama 3.1 model of the family matrix (``tests/family_models.py``: Llama 3.1's real
128,256-token tokenizer and chat template, random weights). A packed SFT step is 4 rows of up to 1,024 tokens in
one sequence: its fp32 logits and their gradients are about 6 GB, so these tests run one after another.
"""

from __future__ import annotations

import math

import pytest
import torch
from family_models import build_family

import labhelpers as lh
from labhelpers import preference, training
from labhelpers.capacity import preflight
from labhelpers.planning import plan_memory

TWO = 2  # the only value a test changes: max_steps
LAB_05_OPTIMIZER_ON_CPU = "adamw_torch"  # lab 05 cell 10: paged_adamw_8bit needs CUDA; a CPU run uses AdamW


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
    from trl import SFTTrainer

    tokenizer = lh.load_tokenizer()
    train_rows = lh.load_lab_dataset("sft", limit=full.sft_train_rows)
    assert len(train_rows) == full.sft_train_rows
    plan = lh.schedule(full, "sft", tokenizer, rows=train_rows, verbose=False)
    assert plan.stated_epochs == full.sft_epochs and plan.packed and plan.max_length == full.max_length
    args = training.sft_config(full, tmp_path / "checkpoints")  # lab 03 cell 7
    assert_common(args, full, steps=plan.steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                  learning_rate=full.learning_rate)
    assert full.sft_forward_rows * full.sft_accum == full.batch_size * full.grad_accum == plan.per_step
    assert args.packing and args.packing_strategy == "bfd" and args.padding_free and not args.gradient_checkpointing
    short = training.sft_config(full, tmp_path / "checkpoints", max_steps=TWO)
    only_steps_changed(args, short)
    trainer = SFTTrainer(model=lh.load_model(for_training=True), args=short,
                         train_dataset=training.as_prompt_completion(train_rows), processing_class=tokenizer,
                         peft_config=training.lora_config(full))  # fmt: skip
    summary = run_two_steps(trainer)
    per_step = summary.trained_tokens / summary.steps
    assert per_step >= 1000, f"a packed full-profile step trained {per_step:.0f} tokens"
    assert per_step <= full.batch_size * full.grad_accum * full.max_length


def test_lab04_neftune_runs_train_unpacked_with_noise(full, tmp_path):
    from trl import SFTTrainer

    tokenizer = lh.load_tokenizer()
    train_rows = lh.load_lab_dataset("sft", limit=full.sft_train_rows)
    plan = lh.schedule(full, "sft", tokenizer, rows=train_rows, packed=False, verbose=False)  # lab 04 cell 14
    steps = max(1, plan.steps // 3)
    assert not plan.packed and plan.rows_per_epoch == full.sft_train_rows
    made = {}
    for name, alpha in (("without", None), ("with", 5.0)):
        args = training.sft_config(full, tmp_path / name, packing=False, max_steps=steps, neftune_noise_alpha=alpha,
                                   save_strategy="no")  # fmt: skip
        assert_common(args, full, steps=steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                      learning_rate=full.learning_rate)
        assert not args.packing and not args.padding_free and args.neftune_noise_alpha == alpha
        short = training.sft_config(full, tmp_path / name, packing=False, max_steps=TWO, neftune_noise_alpha=alpha,
                                    save_strategy="no")  # fmt: skip
        only_steps_changed(args, short)
        made[name] = short
    trainer = SFTTrainer(model=lh.load_model(for_training=True), args=made["with"],
                         train_dataset=training.as_prompt_completion(train_rows), processing_class=tokenizer,
                         peft_config=training.lora_config(full))  # fmt: skip
    run_two_steps(trainer)


def test_lab05_qlora_trains_with_checkpointing_and_the_cpu_optimizer(full, tmp_path):
    from trl import SFTTrainer

    on_gpu = torch.cuda.is_available()
    tokenizer = lh.load_tokenizer("big_model")
    plan = lh.schedule(full, "sft", tokenizer, verbose=False)  # lab 05 cell 10: the shipped rows of the profile
    steps = plan.steps  # full: the whole schedule (smoke trains a third of it)
    optim = "paged_adamw_8bit" if on_gpu else LAB_05_OPTIMIZER_ON_CPU
    model_path = full.resolve("big_model")
    run_plan = plan_memory(model_path, method="qlora", batch=full.sft_forward_rows, seq_len=full.max_length,
                           rank=full.lora_rank, gradient_checkpointing=True,
                           optimizer="paged_adamw_8bit" if on_gpu else "adamw", dtype="bf16" if on_gpu else "fp32",
                           device="cuda" if on_gpu else "cpu", lm_head="chunked", packed=True)  # fmt: skip
    assert (run_plan.batch, run_plan.seq_len, run_plan.rank) == (full.sft_forward_rows, full.max_length, full.lora_rank)
    preflight(run_plan)
    model = lh.load_model("big_model", quantization="4bit", for_training=True, gradient_checkpointing=True)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    args = training.sft_config(full, tmp_path / "checkpoints", max_steps=steps, gradient_checkpointing=True,
                               optim=optim)  # lab 05 cell 18
    assert_common(args, full, steps=steps, batch=full.sft_forward_rows, accum=full.sft_accum,
                  learning_rate=full.learning_rate)
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert str(getattr(args.optim, "value", args.optim)) == optim and args.packing
    short = training.sft_config(full, tmp_path / "checkpoints", max_steps=TWO, gradient_checkpointing=True,
                                optim=optim)  # fmt: skip
    only_steps_changed(args, short)
    trainer = SFTTrainer(model=model, args=short, train_dataset=training.as_prompt_completion(
        lh.load_lab_dataset("sft", limit=full.sft_train_rows)), processing_class=tokenizer,
        peft_config=training.lora_config(full))  # fmt: skip
    summary = run_two_steps(trainer)
    assert summary.trained_tokens / summary.steps >= 1000


# ------------------------------------------------------------------------------------------ preference: labs 06-09
PREFERENCE_LABS = {  # lab -> (preset, TRL trainer: module, name), as each lab's training cell builds it
    "06_dpo": (training.dpo_config, "trl", "DPOTrainer"),
    "07_simpo": (training.simpo_config, "trl.experimental.cpo", "CPOTrainer"),
    "08_orpo": (training.orpo_config, "trl.experimental.orpo", "ORPOTrainer"),
}


@pytest.mark.parametrize("lab_name", list(PREFERENCE_LABS))
def test_labs_06_to_08_preference_trainers_at_the_full_shape(full, lab_name, tmp_path):
    import importlib

    make_config, module, name = PREFERENCE_LABS[lab_name]
    trainer_cls = getattr(importlib.import_module(module), name)
    tokenizer = lh.load_tokenizer()
    train_data = lh.load_lab_dataset("preference", split="train", limit=full.pref_train_rows)
    plan = lh.schedule(full, "preference", tokenizer, rows=train_data, verbose=False)
    assert plan.stated_epochs == full.pref_epochs and plan.rows_per_epoch == full.pref_train_rows
    config = make_config(full, tmp_path / "checkpoints")
    lr = full.orpo_learning_rate or full.pref_learning_rate if lab_name == "08_orpo" else full.pref_learning_rate
    assert_common(config, full, steps=plan.steps, batch=full.pref_batch_size, learning_rate=lr)
    if lab_name == "08_orpo":
        assert config.beta == full.orpo_lambda
    short = make_config(full, tmp_path / "checkpoints", max_steps=TWO)
    only_steps_changed(config, short)
    start = preference.starting_point(full)  # the instruct model + a fresh LoRA config, as labs 06-09 start
    trainer = trainer_cls(model=start.model, args=short, train_dataset=train_data, processing_class=tokenizer,
                          peft_config=start.peft_config)
    run_two_steps(trainer)


def test_lab09_kto_trainer_at_the_full_shape(full, tmp_path):
    from trl import KTOTrainer

    tokenizer = lh.load_tokenizer()
    kto_train = lh.load_lab_dataset("kto", split="train", limit=full.kto_train_rows)
    plan = lh.schedule(full, "kto", tokenizer, rows=kto_train, verbose=False)
    assert plan.stated_epochs == full.pref_epochs and plan.rows_per_epoch == full.kto_train_rows
    config = training.kto_config(full, tmp_path / "checkpoints")
    assert_common(config, full, steps=plan.steps, batch=full.pref_batch_size, learning_rate=full.pref_learning_rate)
    short = training.kto_config(full, tmp_path / "checkpoints", max_steps=TWO)
    only_steps_changed(config, short)
    start = preference.starting_point(full)
    trainer = KTOTrainer(model=start.model, args=short, train_dataset=kto_train, processing_class=tokenizer,
                         peft_config=start.peft_config)
    with preference.count_passes(trainer.model) as forwards:
        run_two_steps(trainer)
    assert forwards["with_grad"] == TWO and forwards["adapter_off"] >= TWO


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
