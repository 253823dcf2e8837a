"""TRL 1.16 config presets per profile, LoRA presets, and ``train()``: resume, tokens/s, memory, NaN guard.

The presets only fill in ``SFTConfig`` / ``DPOConfig`` / ``CPOConfig`` / ``ORPOConfig`` / ``KTOConfig``;
the labs still build TRL's trainers themselves (``SFTTrainer(model=..., args=..., train_dataset=...,
processing_class=tokenizer, peft_config=...)``), because those calls are the lesson. Every preset
value can be overridden with a keyword argument.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from labhelpers.callbacks import NanGuardCallback, ThroughputCallback
from labhelpers.memory import track_memory
from labhelpers.profiles import Profile, profile

if TYPE_CHECKING:  # lab 10's deployment package is imported by lab03_adapter only, when it runs
    from labhelpers.deploy.merge import TimedPath

__all__ = [
    "sft_config", "dpo_config", "simpo_config", "orpo_config", "kto_config", "lora_config",
    "grpo_config", "lab03_adapter", "as_prompt_completion", "with_lengths", "last_checkpoint", "resume_point",
    "train", "TrainSummary",
]  # fmt: skip

SIMPO_BETA = 2.0  # SimPO paper: beta 2.0-2.5 on length-normalised log-probs
SIMPO_GAMMA = 1.0  # target margin; gamma/beta = 0.5, the paper's recommended ratio


def _lab(lab: Profile | None) -> Profile:
    return lab if lab is not None else profile(verbose=False)


def _steps(lab: Profile, kind: str) -> int:
    """The profile's steps for ``kind``: fixed (smoke), else computed from the data and epochs (full).

    A caller's ``max_steps`` still wins (``_merge``); checkpoints are spaced on the profile's run.
    """
    fixed = lab.sft_steps if kind == "sft" else lab.grpo_settings().steps if kind == "grpo" else lab.pref_steps
    if fixed is not None:
        return fixed
    from labhelpers.schedules import schedule

    return schedule(lab, kind, verbose=False).steps


def _common(lab: Profile, output_dir: str | Path, steps: int, lr: float, batch: int, accum: int | None = None
            ) -> dict[str, Any]:
    """Settings every method shares; each line is a choice the FAQ or a lab explains."""
    log_every = 1 if lab.is_smoke else 5  # a live plot needs points; 1/5 steps is cheap
    # about 5 checkpoints per run (3 on smoke: a save costs about a second there), on logging steps
    # (NanGuardCallback vetoes a save on the step it trips)
    save_every = max(log_every, (steps // (3 if lab.is_smoke else 5)) // log_every * log_every)
    return dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=lab.grad_accum if accum is None else accum,
        learning_rate=lr,
        lr_scheduler_type=lab.lr_scheduler,  # constant after the warmup (profiles.py says why)
        warmup_steps=lab.warmup_ratio,  # transformers 5: a float < 1 is a ratio of max_steps (warmup_ratio is gone)
        max_grad_norm=1.0,  # the FAQ's first defence against NaN loss (gradient explosion)
        logging_nan_inf_filter=False,  # log a NaN loss as NaN (default: hidden) so NanGuardCallback sees it
        logging_steps=log_every,
        logging_first_step=True,
        save_strategy="steps",  # an interrupted run resumes from the last checkpoint (train(resume=True))
        save_steps=save_every,
        save_total_limit=2,
        seed=lab.seed,  # LABS_SEED: LoRA initialisation and data order
        data_seed=lab.seed,
        report_to="none",
        bf16=torch.cuda.is_available(),  # bf16 on the Spark's GPU; fp32 on CPU (CPU bf16 is slow and lossy)
        # TRL defaults gradient checkpointing to True; on only when memory needs it (QLoRA 70B). transformers 5
        # calls it activation_checkpointing (the old name still works but warns); _merge maps the old name.
        activation_checkpointing=False,
        dataloader_num_workers=0,  # notebooks + fork workers = trouble; tokenised data is in memory anyway
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory speeds host->GPU copies; no GPU, no use
        max_length=lab.max_length,
    )


_RENAMED = {"gradient_checkpointing": "activation_checkpointing",
            "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}  # transformers 5 names


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    overrides = {_RENAMED.get(key, key): value for key, value in overrides.items()}
    merged = {**base, **overrides}
    if merged.get("activation_checkpointing") and "activation_checkpointing_kwargs" not in overrides:
        merged["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return merged


def sft_config(lab: Profile | None, output_dir: str | Path, **overrides: Any) -> Any:
    """``trl.SFTConfig`` for this profile: packed, padding-free, loss on the completion only.

    - ``packing=True`` + ``packing_strategy="bfd"``: best-fit-decreasing packs whole examples into rows of
      ``max_length`` (only an example longer than ``max_length`` is truncated), so no compute goes to padding.
    - ``padding_free=True``: a packed batch is one flat sequence with ``position_ids`` restarting at 0 per
      example; transformers builds a block-diagonal causal mask from them, so with SDPA no example
      attends to another (tested: packed loss == sum of separate losses).
    - loss on the assistant answer only: SmolLM2's and Llama 3.1's templates have no ``{% generation %}``
      markers, so ``assistant_only_loss`` cannot work; give prompt/completion rows instead
      (``as_prompt_completion``) and TRL's ``completion_only_loss`` masks the prompt.
    """
    from trl import SFTConfig

    lab = _lab(lab)
    # batch_size rows per step, sft_forward_rows of them per forward pass (the profile's sft_micro_batch)
    base = _common(lab, output_dir, _steps(lab, "sft"), lab.learning_rate, lab.sft_forward_rows, lab.sft_accum)
    base.update(packing=True, packing_strategy="bfd", padding_free=True, completion_only_loss=None)
    if overrides.get("packing") is False and "padding_free" not in overrides:
        base["padding_free"] = False  # padding-free without packing would not enforce max_length
    return SFTConfig(**_merge(base, overrides))


def _preference(lab: Profile, output_dir: str | Path, group_by_length: bool, steps: int) -> dict[str, Any]:
    base = _common(lab, output_dir, steps, lab.pref_learning_rate, lab.pref_batch_size)
    if group_by_length:
        # Batches of similar length pad less. The sampler needs a "length" column (with_lengths()) and
        # the trainer must keep it (remove_unused_columns=False; the preference collators ignore it).
        base.update(train_sampling_strategy="group_by_length", length_column_name="length",
                    remove_unused_columns=False)  # fmt: skip
    return base


def dpo_config(lab: Profile | None, output_dir: str | Path, *, group_by_length: bool = False, **overrides: Any) -> Any:
    """``trl.DPOConfig``: sigmoid loss, beta 0.1; with a PEFT model the reference is the adapter switched off.

    ``padding_free`` is not set: TRL 1.16 disabled it for DPO (it warns and pads). Length grouping is
    opt-in (``group_by_length=True`` + ``with_lengths(dataset, tokenizer)``): on the shipped preference
    data it lifts real tokens per batch of 4 from ~91 % to ~98 %, a small gain for one more step.
    """
    from trl import DPOConfig

    lab = _lab(lab)
    base = _preference(lab, output_dir, group_by_length, _steps(lab, "preference"))
    base.update(beta=0.1, loss_type=["sigmoid"])
    return DPOConfig(**_merge(base, overrides))


def simpo_config(
    lab: Profile | None, output_dir: str | Path, *, group_by_length: bool = False, **overrides: Any
) -> Any:
    """SimPO = ``trl.experimental.cpo.CPOConfig(loss_type="simpo", cpo_alpha=0.0)``: no reference model.

    ``cpo_alpha=0.0`` drops CPO's behaviour-cloning NLL term, leaving pure SimPO; the reward is the
    length-normalised log-prob, ``beta`` scales it and ``simpo_gamma`` is the target margin.
    """
    from trl.experimental.cpo import CPOConfig

    lab = _lab(lab)
    base = _preference(lab, output_dir, group_by_length, _steps(lab, "preference"))
    base.update(loss_type="simpo", cpo_alpha=0.0, beta=SIMPO_BETA, simpo_gamma=SIMPO_GAMMA,
                remove_unused_columns=False)  # CPOTrainer's pair collator needs every column (else it warns)
    return CPOConfig(**_merge(base, overrides))


def orpo_config(lab: Profile | None, output_dir: str | Path, *, group_by_length: bool = False, **overrides: Any) -> Any:
    """``trl.experimental.orpo.ORPOConfig``: SFT loss + ``beta`` (lambda) x odds ratio.

    lambda and the learning rate come from the profile: the paper's 0.1 on the full profile; the smoke profile's
    8 steps need a heavier odds-ratio term (``profiles.py`` gives the measurements).
    """
    from trl.experimental.orpo import ORPOConfig

    lab = _lab(lab)
    base = _preference(lab, output_dir, group_by_length, _steps(lab, "preference"))
    base.update(beta=lab.orpo_lambda, remove_unused_columns=False)  # ORPOTrainer's collator needs all columns
    if lab.orpo_learning_rate is not None:
        base["learning_rate"] = lab.orpo_learning_rate
    return ORPOConfig(**_merge(base, overrides))


def kto_config(lab: Profile | None, output_dir: str | Path, **overrides: Any) -> Any:
    """``trl.KTOConfig``: thumbs-up/down rows, beta 0.1, equal desirable/undesirable weights.

    No length grouping: KTO's KL estimate pairs each completion with its neighbours in a fixed-order
    batch, so TRL requires ``train_sampling_strategy="sequential"`` (its default, kept here).
    """
    from trl import KTOConfig

    lab = _lab(lab)
    base = _common(lab, output_dir, _steps(lab, "kto"), lab.pref_learning_rate, lab.pref_batch_size)
    base.update(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0)
    return KTOConfig(**_merge(base, overrides))


def grpo_config(lab: Profile | None, output_dir: str | Path, **overrides: Any) -> Any:
    """``trl.GRPOConfig`` for this profile's GRPO run (``Profile.grpo``), generating with transformers (no vLLM).

    One optimizer step trains on ``generations`` completions of each of ``prompts_per_step`` prompts
    (``per_device_train_batch_size`` counts completions); one generation call samples ``steps_per_generation``
    steps' worth. TRL's sampler (temperature, top_p 1, top_k 0), loss (``"dapo"``: token-level, normalised by the
    completion tokens of the batch) and group scaling of the rewards are kept. ``disable_dropout``: with dropout
    on, the pass that scores a completion would not be the policy that sampled it (and the loss could not be
    recomputed by hand); it also cost a third of a CPU step. ``log_completions`` stays off: the lab prints its own.
    """
    from trl import GRPOConfig

    lab = _lab(lab)
    g = lab.grpo_settings()
    base = _common(lab, output_dir, _steps(lab, "grpo"), g.learning_rate, g.completions_per_step)
    del base["max_length"], base["per_device_eval_batch_size"]  # GRPO: prompts are whole, completions capped below
    base.update(num_generations=g.generations, max_completion_length=g.completion_tokens, temperature=g.temperature,
                steps_per_generation=g.steps_per_generation, beta=g.beta, disable_dropout=True,
                log_completions=False)
    if lab.is_smoke:
        base["warmup_steps"] = 0  # 8 steps: a warmup step would be a step that learns little
    return GRPOConfig(**_merge(base, overrides))


def lab03_adapter(lab: Profile | None, out_dir: str | Path, quick: bool = True) -> TimedPath:
    """Lab 03's adapter when it is current, else an SFT adapter trained here into ``out_dir/adapter``.

    Current: trained on this profile's model (its ``adapter_config.json``) and written after the last change to
    the code that trains it (``deploy.merge.adapter_outdated``). Otherwise it says why and trains an SFT with the
    same helpers, so a lab that builds on lab 03 runs standalone: ``quick`` (smoke: 6 small steps, enough to change
    the answers, not to make them good: lab 10 only compares files) or lab 03's own schedule (``quick=False``:
    lab 12 needs a model that writes the format). Returns the adapter's folder and the time this took.
    """
    from trl import SFTTrainer

    from labhelpers.data import load_lab_dataset
    from labhelpers.deploy.merge import Stopwatch, adapter_base, adapter_matches, adapter_outdated
    from labhelpers.models import load_model, load_tokenizer

    clock = Stopwatch()
    lab = _lab(lab)
    lab03 = lab.output_dir / "03_lora_sft" / "adapter"
    changed = adapter_outdated(lab03)  # code files newer than the adapter (all of them if there is none)
    if adapter_matches(lab03, "model") and not changed:
        print(f"using the adapter from lab 3.1.3: {lab03}")
        return clock.done(lab03)
    if not lab03.exists():
        why = "not found"
    elif not adapter_matches(lab03, "model"):
        why = f"trained on {adapter_base(lab03)}"
    else:
        why = f"older than {len(changed)} file(s) of the code that trains it, e.g. {changed[0].name}"
    print(f"lab 3.1.3's adapter ({lab03}): {why}; training {'a quick one' if quick else 'its SFT'} here")
    # Smoke quick: 6 small steps (a CPU does ~1 TFLOP per 1k-token step of the 135M model); else lab 3.1.3's schedule.
    short = dict(max_steps=6, per_device_train_batch_size=2, max_length=128) if lab.is_smoke and quick else {}
    tokenizer = load_tokenizer()
    trainer = SFTTrainer(
        model=load_model(for_training=True),
        args=sft_config(lab, Path(out_dir) / "checkpoints", **short),
        train_dataset=as_prompt_completion(load_lab_dataset("sft", limit=lab.sft_train_rows)),
        processing_class=tokenizer,
        peft_config=lora_config(lab),
    )
    print(train(trainer, label="quick SFT" if quick else "SFT (lab 3.1.3's schedule)"))
    adapter_dir = Path(out_dir) / "adapter"
    trainer.save_model(adapter_dir)  # adapter_model.safetensors + adapter_config.json
    tokenizer.save_pretrained(adapter_dir)
    return clock.done(adapter_dir)


def lora_config(lab: Profile | None = None, r: int | None = None, **overrides: Any) -> Any:
    """``peft.LoraConfig``: rank from the profile (16), alpha 32, dropout 0.05, every linear layer.

    alpha stays 32 (2 x the profile's rank) when ``r`` changes, as in the LoRA paper (Hu et al. 2021, section
    4.1: alpha is set to the first r tried and not tuned), so the scale alpha/r falls as r grows. rsLoRA
    (arXiv:2312.03732) argues alpha/sqrt(r) keeps higher ranks learning: ``use_rslora=True``.
    """
    from peft import LoraConfig

    prof_rank = _lab(lab).lora_rank
    rank = r if r is not None else prof_rank
    if rank < 1:
        raise ValueError(f"r={rank}: the LoRA rank must be a positive integer (8, 16, 32, 64 ...).")
    base = dict(
        r=rank,
        lora_alpha=2 * prof_rank,
        lora_dropout=0.05,
        target_modules="all-linear",  # attention and MLP projections; not lm_head
        bias="none",
        task_type="CAUSAL_LM",
    )
    return LoraConfig(**{**base, **overrides})


def as_prompt_completion(dataset: Any) -> Any:
    """``{"messages": [..., assistant]}`` rows -> ``{"prompt": [...], "completion": [assistant]}`` rows.

    The conversational prompt/completion form lets SFTTrainer mask the prompt with any chat template.
    """
    if "messages" not in dataset.column_names:
        raise ValueError(
            f"as_prompt_completion: the dataset has no 'messages' column (columns: {dataset.column_names})."
        )

    def split(row: dict[str, Any], idx: int) -> dict[str, Any]:
        msgs = row["messages"]
        if len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise ValueError(f"row {idx}, field 'messages': the last of at least two messages must be the assistant's.")
        return {"prompt": msgs[:-1], "completion": [msgs[-1]]}

    return dataset.map(split, with_indices=True, remove_columns=["messages"])


def with_lengths(dataset: Any, tokenizer: Any) -> Any:
    """Add the ``length`` column (tokens of prompt + longer answer) that length-grouped sampling reads."""
    from labhelpers.evaluation import chat_tokens

    def length(row: dict[str, Any]) -> dict[str, int]:
        answers = [row[k] for k in ("chosen", "rejected", "completion") if k in row]
        return {"length": max(len(chat_tokens(tokenizer, row["prompt"], a)[0]) for a in answers)}

    return dataset.map(length)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder (one with ``trainer_state.json``) in ``output_dir``."""
    folder = Path(output_dir)
    found = [
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()
    ]
    return str(max(found)[1]) if found else None


def resume_point(args: Any) -> tuple[str | None, str]:
    """The checkpoint ``train()`` resumes from (or None), and why: only an unfinished run, same schedule."""
    checkpoint = last_checkpoint(args.output_dir)
    if checkpoint is None:
        return None, "no checkpoint"
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    step, steps, batch = state.get("global_step", 0), state.get("max_steps"), state.get("train_batch_size")
    if steps != args.max_steps or batch not in (None, args.per_device_train_batch_size):
        return None, f"{checkpoint} belongs to another run (max_steps {steps}, batch {batch})"
    if step >= args.max_steps:
        return None, f"{checkpoint} is a finished run (step {step} of {steps})"
    return checkpoint, f"resuming from {checkpoint} (step {step} of {steps})"


def _clear_checkpoints(output_dir: str | Path) -> None:
    """Remove stale ``checkpoint-N`` folders (not the saved adapter) so a fresh run cannot mix with them."""
    for path in Path(output_dir).glob("checkpoint-*"):
        if path.is_dir() and re.fullmatch(r"checkpoint-\d+", path.name):
            shutil.rmtree(path)


@dataclass
class TrainSummary:
    """What one ``train()`` call measured."""

    wall_time_s: float
    steps: int
    start_step: int
    final_loss: float | None
    tokens_per_s: float
    trained_tokens: int
    nonpad_fraction: float
    peak_memory_bytes: int
    memory_delta_bytes: int
    resumed_from: str | None
    stopped_by_nan: bool
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def peak_memory_gb(self) -> float:
        return self.peak_memory_bytes / 1e9

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields (no log history), e.g. for ``labhelpers.results.save_result``."""
        out = {k: v for k, v in asdict(self).items() if k != "log_history"}
        out["peak_memory_gb"] = self.peak_memory_gb
        return out

    def __str__(self) -> str:
        loss = f"{self.final_loss:.4f}" if self.final_loss is not None else "n/a"
        start = f" (resumed at step {self.start_step})" if self.resumed_from else ""
        return (
            f"steps {self.steps}{start} | wall {self.wall_time_s:.1f} s | final loss {loss} | "
            f"{self.tokens_per_s:,.0f} trained tokens/s ({100 * self.nonpad_fraction:.0f}% non-pad) | "
            f"peak memory {self.peak_memory_gb:.2f} GB"
        )


def _find(trainer: Any, kind: type) -> Any:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, kind)), None)


def train(trainer: Any, resume: bool = True, label: str = "training") -> TrainSummary:
    """Run ``trainer.train()``, from the last checkpoint in ``args.output_dir`` when ``resume``; measure it.

    Resumes only an unfinished run with the same ``max_steps`` and batch size (``resume_point``); a
    finished or different run's checkpoints are removed first, so re-running a lab cell trains again.
    Adds a ``ThroughputCallback`` and a ``NanGuardCallback`` if the trainer has none, and wraps the run
    in ``labhelpers.memory.track_memory`` (torch's peak allocation on a GPU; on a CPU the RSS at entry plus
    malloc's peak growth).
    """
    meter = _find(trainer, ThroughputCallback) or ThroughputCallback()
    guard = _find(trainer, NanGuardCallback) or NanGuardCallback()
    for cb in (meter, guard):
        if cb not in trainer.callback_handler.callbacks:
            trainer.add_callback(cb)
    checkpoint, why = resume_point(trainer.args) if resume else (None, "resume=False")
    start_step = 0
    if checkpoint:
        start_step = json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("global_step", 0)
        print(f"train(): {why}.")
    elif last_checkpoint(trainer.args.output_dir):
        print(f"train(): training from step 0 ({why}); removing the old checkpoint-* folders.")
        _clear_checkpoints(trainer.args.output_dir)
    t0 = time.perf_counter()
    with track_memory(label) as tracked:
        trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    history = list(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    thr = meter.summary()
    return TrainSummary(
        wall_time_s=wall,
        steps=trainer.state.global_step,
        start_step=start_step,
        final_loss=losses[-1] if losses else None,
        tokens_per_s=thr["tokens_per_s"],
        trained_tokens=thr["trained_tokens"],
        nonpad_fraction=thr["nonpad_fraction"],
        peak_memory_bytes=tracked.peak,
        memory_delta_bytes=tracked.delta,
        resumed_from=checkpoint,
        stopped_by_nan=guard.tripped,
        log_history=history,
    )
