"""Each training lab's trainer, built as the lab's cells build it, with the current profile's settings.

One builder per lab (03 SFT, 04 NEFTune, 05 QLoRA, 06-08 DPO/SimPO/ORPO, 09 KTO). Each returns a ``LabRun``:
the lab's schedule, its TRL arguments at the lab's own step count, the same arguments with ``max_steps``
alone changed, and the trainer built on the short ones. ``tests/test_full_profile.py`` asserts the arguments
equal the full profile's values and trains the trainers for 2 steps on the CPU; ``bench/gpu_check.py`` trains
the same trainers on a GPU. The profile's model (``LABS_MODEL``) is whatever the caller points it at.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import labhelpers as lh
from labhelpers import preference, training
from labhelpers.memory import plan_memory, preflight

LAB_05_OPTIMIZER_ON_CPU = "adamw_torch"  # lab 05 cell 10: paged_adamw_8bit needs CUDA; a CPU run uses AdamW
LAB_05_OPTIMIZER_ON_GPU = "paged_adamw_8bit"

PREFERENCE_LABS = {  # lab -> (preset, TRL trainer: module, name), as each lab's training cell builds it
    "06_dpo": (training.dpo_config, "trl", "DPOTrainer"),
    "07_simpo": (training.simpo_config, "trl.experimental.cpo", "CPOTrainer"),
    "08_orpo": (training.orpo_config, "trl.experimental.orpo", "ORPOTrainer"),
}


@dataclass
class LabRun:
    """One lab's training, built: its schedule, its arguments (``args``: the lab's steps; ``short``: ``steps``)."""

    lab: str
    plan: Any
    args: Any
    short: Any
    trainer: Any
    extra: dict[str, Any] = field(default_factory=dict)


def lab03_sft(prof: Any, out: Path, steps: int) -> LabRun:
    """Lab 03: packed LoRA SFT on the profile's SFT rows (cell 7's ``sft_config``)."""
    from trl import SFTTrainer

    tokenizer = lh.load_tokenizer()
    rows = lh.load_lab_dataset("sft", limit=prof.sft_train_rows)
    plan = lh.schedule(prof, "sft", tokenizer, rows=rows, verbose=False)
    args = training.sft_config(prof, out / "checkpoints")
    short = training.sft_config(prof, out / "checkpoints", max_steps=steps)
    trainer = SFTTrainer(model=lh.load_model(for_training=True), args=short,
                         train_dataset=training.as_prompt_completion(rows), processing_class=tokenizer,
                         peft_config=training.lora_config(prof))  # fmt: skip
    return LabRun("03_lora_sft", plan, args, short, trainer, {"rows": len(rows)})


def lab04_neftune(prof: Any, out: Path, steps: int, alphas: tuple = (("without", None), ("with", 5.0))) -> LabRun:
    """Lab 04: unpacked SFT runs of a third of the schedule, without and with NEFTune noise; trains the last."""
    from trl import SFTTrainer

    tokenizer = lh.load_tokenizer()
    rows = lh.load_lab_dataset("sft", limit=prof.sft_train_rows)
    plan = lh.schedule(prof, "sft", tokenizer, rows=rows, packed=False, verbose=False)  # lab 04 cell 14
    lab_steps = max(1, plan.steps // 3)
    configs = {}
    for name, alpha in alphas:
        made = [training.sft_config(prof, out / name, packing=False, max_steps=n, neftune_noise_alpha=alpha,
                                    save_strategy="no") for n in (lab_steps, steps)]  # fmt: skip
        configs[name] = (alpha, *made)
    _, args, short = configs[alphas[-1][0]]
    trainer = SFTTrainer(model=lh.load_model(for_training=True), args=short,
                         train_dataset=training.as_prompt_completion(rows), processing_class=tokenizer,
                         peft_config=training.lora_config(prof))  # fmt: skip
    return LabRun("04_neftune", plan, args, short, trainer, {"configs": configs, "lab_steps": lab_steps})


def lab05_qlora(prof: Any, out: Path, steps: int) -> LabRun:
    """Lab 05: the big model in 4-bit, gradient checkpointing, paged 8-bit AdamW on a GPU (AdamW on a CPU)."""
    from trl import SFTTrainer

    on_gpu = torch.cuda.is_available()
    tokenizer = lh.load_tokenizer("big_model")
    plan = lh.schedule(prof, "sft", tokenizer, verbose=False)  # lab 05 cell 10: the shipped rows of the profile
    lab_steps = plan.steps // 3 if prof.is_smoke else plan.steps
    optim = LAB_05_OPTIMIZER_ON_GPU if on_gpu else LAB_05_OPTIMIZER_ON_CPU
    run_plan = plan_memory(prof.resolve("big_model"), method="qlora", batch=prof.sft_forward_rows,
                           seq_len=prof.max_length, rank=prof.lora_rank, gradient_checkpointing=True,
                           optimizer="paged_adamw_8bit" if on_gpu else "adamw", dtype="bf16" if on_gpu else "fp32",
                           device="cuda" if on_gpu else "cpu", lm_head="chunked", packed=True)  # fmt: skip
    preflight(run_plan, verbose=False)
    model = lh.load_model("big_model", quantization="4bit", for_training=True, gradient_checkpointing=True)
    args = training.sft_config(prof, out / "checkpoints", max_steps=lab_steps, gradient_checkpointing=True,
                               optim=optim)  # lab 05 cell 18
    short = training.sft_config(prof, out / "checkpoints", max_steps=steps, gradient_checkpointing=True, optim=optim)
    trainer = SFTTrainer(model=model, args=short, train_dataset=training.as_prompt_completion(
        lh.load_lab_dataset("sft", limit=prof.sft_train_rows)), processing_class=tokenizer,
        peft_config=training.lora_config(prof))  # fmt: skip
    return LabRun("05_qlora", plan, args, short, trainer, {"memory_plan": run_plan, "optim": optim, "model": model})


def lab_preference(lab_name: str, prof: Any, out: Path, steps: int) -> LabRun:
    """Labs 06-08: DPO, SimPO (CPOTrainer) or ORPO from the instruct model with a fresh LoRA config."""
    make_config, module, name = PREFERENCE_LABS[lab_name]
    trainer_cls = getattr(importlib.import_module(module), name)
    tokenizer = lh.load_tokenizer()
    data = lh.load_lab_dataset("preference", split="train", limit=prof.pref_train_rows)
    plan = lh.schedule(prof, "preference", tokenizer, rows=data, verbose=False)
    args = make_config(prof, out / "checkpoints")
    short = make_config(prof, out / "checkpoints", max_steps=steps)
    start = preference.load_starting_model(prof)  # the instruct model + a fresh LoRA config, as labs 06-09 start
    trainer = trainer_cls(model=start.model, args=short, train_dataset=data, processing_class=tokenizer,
                          peft_config=start.peft_config)
    return LabRun(lab_name, plan, args, short, trainer)


def lab09_kto(prof: Any, out: Path, steps: int) -> LabRun:
    """Lab 09: KTO on thumbs-up/down rows from the instruct model with a fresh LoRA config."""
    from trl import KTOTrainer

    tokenizer = lh.load_tokenizer()
    data = lh.load_lab_dataset("kto", split="train", limit=prof.kto_train_rows)
    plan = lh.schedule(prof, "kto", tokenizer, rows=data, verbose=False)
    args = training.kto_config(prof, out / "checkpoints")
    short = training.kto_config(prof, out / "checkpoints", max_steps=steps)
    start = preference.load_starting_model(prof)
    trainer = KTOTrainer(model=start.model, args=short, train_dataset=data, processing_class=tokenizer,
                         peft_config=start.peft_config)
    return LabRun("09_kto", plan, args, short, trainer)


def lab12_grpo(prof: Any, out: Path, steps: int) -> LabRun:
    """GRPO (lab 12) on the SFT prompts with two checkable rewards (format, right lab), on the profile's model with
    a fresh LoRA (lab 12 starts from lab 03's merged adapter; the trainer's shape is the same)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from labhelpers import task

    tokenizer = lh.load_tokenizer()
    data = lh.load_lab_dataset("sft", split="train", limit=prof.sft_train_rows)
    rows = [{"prompt": r["messages"][:-1], "expected_lab": n}
            for r, n in zip(data, task.expected_labs(data), strict=False)]
    plan = lh.schedule(prof, "grpo", tokenizer, rows=data, verbose=False)

    def format_reward(completions, **kwargs):
        return [1.0 if task.format_ok(c[0]["content"]) else 0.0 for c in completions]

    def lab_reward(completions, expected_lab, **kwargs):
        return [1.0 if task.cited_lab(c[0]["content"]) == e else 0.0
                for c, e in zip(completions, expected_lab, strict=False)]

    args = training.grpo_config(prof, out / "checkpoints", reward_weights=[1.0, 1.0])
    short = training.grpo_config(prof, out / "checkpoints", reward_weights=[1.0, 1.0], max_steps=steps)
    trainer = GRPOTrainer(model=lh.load_model(for_training=True), reward_funcs=[format_reward, lab_reward],
                          args=short, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=training.lora_config(prof, lora_dropout=0.0))
    return LabRun("12_grpo", plan, args, short, trainer)


BUILDERS = {  # lab -> builder(prof, out, steps)
    "03_lora_sft": lab03_sft,
    "04_neftune": lab04_neftune,
    "05_qlora": lab05_qlora,
    **{name: (lambda prof, out, steps, _n=name: lab_preference(_n, prof, out, steps)) for name in PREFERENCE_LABS},
    "09_kto": lab09_kto,
    "12_grpo": lab12_grpo,
}
