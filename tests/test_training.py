"""labhelpers.training / labhelpers.callbacks: presets, packing correctness, callbacks, resume.

Training mechanics run on a 2-layer Llama with SmolLM2's tokenizer and vocabulary (seconds on a CPU);
the packing check runs the real embedded SmolLM2, because it is a claim about that model with SDPA.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback, TrainerControl, TrainerState  # noqa: E402

from labhelpers import training as T  # noqa: E402
from labhelpers.callbacks import EmbeddingNoiseProbe, LivePlotCallback, NanGuardCallback  # noqa: E402
from labhelpers.profiles import profile  # noqa: E402


def chat(i: int, words: int = 1) -> dict:
    user = f"What is {i} plus {i}?" + " Please explain." * words
    answer = f"Answer: {2 * i}\nLab: 3.1.{i % 10}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def sft_rows(n: int, words: int = 1) -> Dataset:
    return T.as_prompt_completion(Dataset.from_list([chat(i, words + i % 3) for i in range(n)]))


def sft_trainer(model, tokenizer, lab, out, ds, callbacks=(), **overrides):
    from trl import SFTTrainer

    args = T.sft_config(lab, out, **{"per_device_train_batch_size": 2, "logging_steps": 1, **overrides})
    return SFTTrainer(model=copy.deepcopy(model), args=args, train_dataset=ds, processing_class=tokenizer,
                      peft_config=T.lora_config(lab), callbacks=list(callbacks))  # fmt: skip


# ------------------------------------------------------------------------------------------ presets
def test_sft_preset_follows_the_smoke_profile(lab, tmp_path):
    cfg = T.sft_config(lab, tmp_path)
    assert (cfg.max_steps, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (
        lab.sft_steps, lab.batch_size, lab.grad_accum)  # fmt: skip
    assert cfg.learning_rate == lab.learning_rate and cfg.max_length == lab.max_length
    assert str(getattr(cfg.lr_scheduler_type, "value", cfg.lr_scheduler_type)) == lab.lr_scheduler
    assert cfg.packing and cfg.packing_strategy == "bfd" and cfg.padding_free
    assert cfg.max_grad_norm == 1.0 and cfg.warmup_steps == 0.1
    assert cfg.save_strategy == "steps" and cfg.save_total_limit == 2 and cfg.seed == 0
    assert cfg.bf16 is torch.cuda.is_available() and cfg.gradient_checkpointing is False
    # the documented spacing: about 3 checkpoints on smoke, each on a logged step (NanGuard can veto it)
    saved = [step for step in range(1, cfg.max_steps + 1) if step % cfg.save_steps == 0]
    assert cfg.logging_steps == 1 and saved == [5, 10, 15]
    assert cfg.report_to in ([], "none", ["none"]) and cfg.dataloader_num_workers == 0


def test_presets_follow_the_full_profile(monkeypatch, tmp_path):
    from labhelpers.schedules import schedule

    monkeypatch.setenv("LABS_PROFILE", "full")
    monkeypatch.setenv("LABS_MODEL", "embedded")  # the steps are computed with the model's tokenizer
    full = profile(verbose=False)
    sft, dpo = T.sft_config(full, tmp_path), T.dpo_config(full, tmp_path)
    sft_steps = schedule(full, "sft", verbose=False).steps
    # one packed row per step (a pass's rows are one sequence: its attention mask grows with L^2)
    assert (sft.max_steps, sft.per_device_train_batch_size, sft.gradient_accumulation_steps, sft.max_length) == (
        sft_steps, 1, 1, 1024)  # fmt: skip
    assert sft.learning_rate == 2e-4 and sft.logging_steps == 5
    assert str(getattr(sft.lr_scheduler_type, "value", sft.lr_scheduler_type)) == "constant_with_warmup"
    # at least 5 checkpoints per run (more on a short one: they stay on logged steps), each on a logged step
    assert sft_steps // sft.save_steps >= 5 and sft.save_steps % 5 == 0, (sft_steps, sft.save_steps)
    assert (dpo.max_steps, dpo.learning_rate, dpo.beta) == (125, 5e-4, 0.1)  # 500 pairs, 1 epoch, batch 4


def test_an_override_changes_only_what_follows_from_it(lab, tmp_path):
    preset = T.sft_config(lab, tmp_path).to_dict()
    cfg = T.sft_config(lab, tmp_path, packing=False, gradient_checkpointing=True)
    changed = {k for k, v in cfg.to_dict().items() if preset.get(k) != v}
    # packing off turns padding-free off (it would not enforce max_length); the old transformers name
    # gradient_checkpointing lands on activation_checkpointing, with non-reentrant checkpointing
    checkpointing = {"activation_checkpointing", "activation_checkpointing_kwargs"}
    assert (changed - {"gradient_checkpointing", "gradient_checkpointing_kwargs"}
            == {"packing", "padding_free"} | checkpointing)
    assert cfg.padding_free is False and cfg.activation_checkpointing_kwargs == {"use_reentrant": False}
    kept = T.sft_config(lab, tmp_path, packing=False, padding_free=True, gradient_checkpointing=True,
                        gradient_checkpointing_kwargs={"use_reentrant": True})
    assert kept.padding_free is True and kept.activation_checkpointing_kwargs == {"use_reentrant": True}
    T.kto_config(lab, tmp_path, beta=0.3)
    assert T.kto_config(lab, tmp_path).beta == 0.1, "an override leaked into the next preset"


def test_simpo_is_cpo_with_simpo_loss_and_no_bc_term(lab, tmp_path):
    from trl.experimental.cpo import CPOConfig

    cfg = T.simpo_config(lab, tmp_path)
    assert isinstance(cfg, CPOConfig)
    assert cfg.loss_type == "simpo" and cfg.cpo_alpha == 0.0
    assert cfg.beta == 2.0 and cfg.simpo_gamma == 1.0
    assert cfg.max_steps == lab.pref_steps and cfg.learning_rate == lab.pref_learning_rate
    assert cfg.per_device_train_batch_size == lab.pref_batch_size


def test_preference_presets_types_and_length_grouping(lab, tmp_path):
    from trl import DPOConfig, KTOConfig
    from trl.experimental.orpo import ORPOConfig

    assert isinstance(T.dpo_config(lab, tmp_path), DPOConfig)
    orpo = T.orpo_config(lab, tmp_path)
    assert isinstance(orpo, ORPOConfig) and (orpo.beta, orpo.learning_rate) == (10.0, 1e-3)  # smoke: profiles.py
    from labhelpers.profiles import with_overrides

    full = T.orpo_config(with_overrides(lab, orpo_lambda=0.1, orpo_learning_rate=None), tmp_path)
    assert (full.beta, full.learning_rate) == (0.1, lab.pref_learning_rate)  # the paper's lambda, the shared rate
    kto = T.kto_config(lab, tmp_path)
    assert isinstance(kto, KTOConfig) and kto.train_sampling_strategy == "sequential"  # KTO's KL needs it
    grouped = T.dpo_config(lab, tmp_path, group_by_length=True)
    assert grouped.train_sampling_strategy == "group_by_length" and grouped.remove_unused_columns is False


def test_lora_preset_rank_alpha_and_bad_rank(lab):
    cfg = T.lora_config(lab)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.05)
    assert cfg.target_modules == "all-linear" and cfg.task_type == "CAUSAL_LM"
    # alpha stays fixed when r changes (the LoRA paper), so alpha/r falls from 2 to 0.5 at r=64
    assert T.lora_config(lab, r=8).lora_alpha == T.lora_config(lab, r=64).lora_alpha == 32
    with pytest.raises(ValueError, match="LoRA rank must be a positive integer"):
        T.lora_config(lab, r=0)


def test_as_prompt_completion_splits_and_names_bad_rows():
    ds = T.as_prompt_completion(Dataset.from_list([chat(1)]))
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["completion"][0]["content"].startswith("Answer: 2")
    bad = Dataset.from_list([chat(1), {"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match="row 1, field 'messages'"):
        T.as_prompt_completion(bad)


# ---------------------------------------------------------------------------------------- packing
def test_packed_loss_equals_sum_of_separate_losses(lab, tokenizer, tmp_path):
    """Padding-free packing with SDPA: position_ids restart per example, so no example sees another."""
    from trl import SFTTrainer

    from labhelpers.models import load_model

    model = load_model("model")
    ds = sft_rows(2, words=3)

    def prepared(**kw):
        args = T.sft_config(lab, tmp_path, per_device_train_batch_size=2, **kw)
        return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)

    def nll(batch) -> tuple[float, int]:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        return loss.item(), int((labels != -100).sum())

    packed_tr = prepared()
    assert len(packed_tr.train_dataset) == 1  # both examples in one packed row
    packed_batch = packed_tr.data_collator([packed_tr.train_dataset[0]])
    assert "attention_mask" not in packed_batch and "position_ids" in packed_batch
    packed, packed_n = nll(packed_batch)
    plain_tr = prepared(packing=False)
    separate = [nll(plain_tr.data_collator([row])) for row in plain_tr.train_dataset]
    assert packed_n == sum(n for _, n in separate)
    assert packed == pytest.approx(sum(s for s, _ in separate), rel=1e-4)
    # and the prompt is masked: only "Answer: ...<|im_end|>\n" tokens carry labels
    row = plain_tr.train_dataset[0]
    answer = tokenizer.decode(
        [t for t, lab_ in zip(row["input_ids"], row["labels"], strict=True) if lab_ != -100]
    )
    assert answer.startswith("Answer: 0") and "What is" not in answer


# -------------------------------------------------------------------------------------- callbacks
def test_one_neftune_step_adds_noise_of_alpha_over_sqrt_ld_through_the_trainer_and_none_in_eval(
        tiny_llama, tokenizer, lab, tmp_path):
    """What lab 04 teaches, through SFTTrainer's own path: neftune_noise_alpha=5 -> noise in [-alpha/sqrt(L*d),
    +alpha/sqrt(L*d)] on every embedding during a training step (L the batch's padded length, d the width), and
    the embeddings of an eval-mode forward, during and after training, untouched."""
    alpha, seen = 5.0, []

    class Probe(TrainerCallback):  # registered after Trainer.train() has attached NEFTune's hook, so it runs after it
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            embed = model.get_input_embeddings()

            def record(module, inputs, output):
                clean = torch.nn.functional.embedding(inputs[0], module.weight)
                seen.append((module.training, inputs[0].shape[1], (output - clean).detach()))

            self.handle = embed.register_forward_hook(record)
            model.eval()  # one eval-mode forward while the NEFTune hook is attached
            with torch.no_grad():
                model(input_ids=torch.tensor([[5, 6, 7, 8]]))
            model.train()

        def on_train_end(self, args, state, control, **kwargs):
            self.handle.remove()

    trainer = sft_trainer(tiny_llama, tokenizer, lab, tmp_path, sft_rows(4), [Probe()], max_steps=1,
                          packing=False, neftune_noise_alpha=alpha, save_strategy="no")
    T.train(trainer, resume=False)
    (eval_mode, _, eval_noise), *train_steps = seen
    assert not eval_mode and torch.count_nonzero(eval_noise) == 0  # no noise in eval mode
    assert train_steps and all(training for training, _, _ in train_steps)
    d = trainer.model.get_input_embeddings().embedding_dim
    for _, length, noise in train_steps:
        bound = alpha / math.sqrt(length * d)
        assert noise.abs().max() <= bound * (1 + 1e-6), f"noise {noise.abs().max():.5f} over alpha/sqrt(Ld) {bound:.5f}"
        assert noise.abs().max() >= 0.9 * bound and noise.abs().mean() == pytest.approx(bound / 2, rel=0.1)
    embed = trainer.model.get_input_embeddings()  # after training: the hook is gone
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(embed(ids), torch.nn.functional.embedding(ids, embed.weight))


@pytest.mark.parametrize("alpha", [5.0, None])
def test_embedding_noise_probe_measures_what_the_trainer_added(alpha, tiny_llama, tokenizer, lab, tmp_path):
    """Lab 04's probe: with NEFTune every training step's noise reaches 0.9-1.0 of alpha/sqrt(L*d); without, 0.0
    exactly; the probe's hook is gone after training."""
    probe = EmbeddingNoiseProbe(5.0)
    trainer = sft_trainer(tiny_llama, tokenizer, lab, tmp_path, sft_rows(4), [probe], max_steps=2,
                          packing=False, neftune_noise_alpha=alpha, save_strategy="no")
    T.train(trainer, resume=False)
    assert len(probe.ratios) == 2  # one training-mode forward per step (batch 2, no accumulation)
    if alpha is None:
        assert max(probe.ratios) == 0.0
    else:
        assert 0.9 <= min(probe.ratios) and max(probe.ratios) <= 1 + 1e-6
    assert not trainer.model.get_input_embeddings()._forward_hooks


def test_nan_guard_stops_and_explains_the_three_causes(capsys):
    guard, state, control = NanGuardCallback(), TrainerState(), TrainerControl()
    state.global_step = 7
    guard.on_log(None, state, control, logs={"loss": 2.5, "grad_norm": 1.0})
    assert not control.should_training_stop and not guard.tripped
    control.should_save = True
    guard.on_log(None, state, control, logs={"loss": float("nan")})
    assert control.should_training_stop and not control.should_save and guard.tripped
    out = capsys.readouterr().out
    for needle in ("step 7", "learning_rate=1e-5", "Empty sequences", "truncation", "max_grad_norm=1.0"):
        assert needle in out, needle
    guard2, control2 = NanGuardCallback(verbose=False), TrainerControl()
    guard2.on_log(None, state, control2, logs={"loss": 1.0, "grad_norm": float("inf")})
    assert control2.should_training_stop and "gradient norm" in guard2.message


def test_nan_guard_stops_a_real_run(tiny_llama, tokenizer, lab, tmp_path):
    trainer = sft_trainer(tiny_llama, tokenizer, lab, tmp_path, sft_rows(4), max_steps=4, save_steps=1)
    norm = trainer.model.get_base_model().model.norm
    norm.register_forward_hook(lambda module, args, output: output * float("nan"))
    summary = T.train(trainer, resume=False)
    assert summary.stopped_by_nan and summary.steps == 1
    assert T.last_checkpoint(tmp_path) is None  # the NaN step was not checkpointed


def test_throughput_leaves_out_reference_and_eval_passes():
    """ThroughputCallback's documented exclusion: a forward without a graph (a DPO/KTO reference pass under
    no_grad, an eval in eval mode) trains nothing and is not counted; only training forwards are."""
    from labhelpers.callbacks import ThroughputCallback

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask=None, labels=None):
            return self.emb(input_ids)

    model, meter = Tiny(), ThroughputCallback()
    meter.on_train_begin(None, TrainerState(), TrainerControl(), model=model)
    ids, mask = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[1, 1, 1, 0]])
    model.train()
    with torch.no_grad():
        model(ids)  # the reference model's pass: the same batch, no graph
    assert meter.tokens == 0, "a no-grad (reference) forward was counted as trained tokens"
    model.eval()
    model(ids)
    assert meter.tokens == 0, "an eval-mode forward was counted as trained tokens"
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([[-100, 2, 3, -100]]))
    assert (meter.tokens, meter.slots, meter.loss_tokens) == (3, 4, 2)  # the policy's pass: its 3 real tokens
    meter.on_train_end(None, TrainerState(), TrainerControl())
    model(ids)
    assert meter.tokens == 3, "the hook outlived training"


@pytest.mark.parametrize("packing", [True, False])
def test_throughput_counts_every_real_token(tiny_llama, tokenizer, lab, tmp_path, packing):
    ds = sft_rows(4)
    trainer = sft_trainer(tiny_llama, tokenizer, lab, tmp_path, ds, packing=packing, max_length=256,
                          max_steps=1 if packing else 2, save_strategy="no")  # fmt: skip (4 rows fit 256)
    expected = sum(len(r["input_ids"]) for r in trainer.train_dataset)  # one epoch exactly
    summary = T.train(trainer, resume=False)
    assert summary.trained_tokens == expected
    assert summary.tokens_per_s > 0 and math.isfinite(summary.tokens_per_s)
    if packing:
        assert len(trainer.train_dataset) == 1 and summary.nonpad_fraction == 1.0
    else:
        assert 0 < summary.nonpad_fraction < 1.0  # rows of different lengths, padded per batch


def preference_rows(n: int) -> Dataset:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Which lab covers topic {i}?" + " Be brief." * (i % 3)}]
        chosen = [{"role": "assistant", "content": f"Answer: topic {i}\nLab: 3.1.6"}]
        rejected = [{"role": "assistant", "content": f"I think it is maybe {i}."}]
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(rows)


@pytest.mark.parametrize("method", ["dpo", "simpo", "orpo", "kto"])
def test_every_preference_preset_trains(method, tiny_llama, tokenizer, lab, tmp_path):
    from trl import DPOTrainer, KTOTrainer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    trainer_cls = {"dpo": DPOTrainer, "simpo": CPOTrainer, "orpo": ORPOTrainer, "kto": KTOTrainer}[method]
    common = dict(max_steps=2, per_device_train_batch_size=2, save_strategy="no", logging_steps=1)
    if method == "kto":
        pairs = preference_rows(2)
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
                                for r in pairs for k in ("chosen", "rejected")])  # fmt: skip
        args = T.kto_config(lab, tmp_path, **common)
    else:
        ds = T.with_lengths(preference_rows(4), tokenizer)
        args = getattr(T, f"{method}_config")(lab, tmp_path, group_by_length=True, **common)
    model = copy.deepcopy(tiny_llama)
    trainer = trainer_cls(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                          peft_config=T.lora_config(lab))  # fmt: skip
    if method != "kto":
        assert type(trainer._get_train_sampler()).__name__ == "LengthGroupedSampler"
    summary = T.train(trainer, resume=False)
    assert summary.steps == 2 and math.isfinite(summary.final_loss) and summary.trained_tokens > 0
    assert any("rewards/chosen" in h for h in summary.log_history)
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.detach().abs().sum() > 0) for p in lora_b), (
        "no LoRA B matrix moved from its zero initialisation: the preset did not train (learning rate 0?)")


class StopAt(TrainerCallback):
    """Simulates an interrupted run (a kernel restart) after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_train_resumes_from_the_last_checkpoint(tiny_llama, tokenizer, lab, tmp_path):
    ds = sft_rows(8)
    settings = dict(packing=False, max_steps=4, save_steps=2)
    first = T.train(sft_trainer(tiny_llama, tokenizer, lab, tmp_path, ds, [StopAt(3)], **settings))
    assert first.steps == 3 and first.resumed_from is None
    assert Path(T.last_checkpoint(tmp_path)).name == "checkpoint-2"
    second = T.train(sft_trainer(tiny_llama, tokenizer, lab, tmp_path, ds, **settings))
    assert Path(second.resumed_from).name == "checkpoint-2" and second.start_step == 2
    assert second.steps == 4 and second.final_loss is not None and math.isfinite(second.final_loss)
    assert [h["step"] for h in second.log_history if "loss" in h] == [1, 2, 3, 4]
    # same adapter weights, optimizer state, data order and RNG: step 3 gives the interrupted run's loss
    step3 = [next(h["loss"] for h in run.log_history if h.get("step") == 3) for run in (first, second)]
    assert step3[0] == pytest.approx(step3[1], rel=1e-4)
    assert second.trained_tokens > 0 and not second.stopped_by_nan
    row = second.as_dict()
    assert {"wall_time_s", "tokens_per_s", "peak_memory_gb", "final_loss"} <= set(row)
    assert "steps 4 (resumed at step 2)" in str(second)


def fake_checkpoint(folder: Path, step: int, max_steps: int, batch: int = 2) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    state = {"global_step": step, "max_steps": max_steps, "train_batch_size": batch}
    (path / "trainer_state.json").write_text(json.dumps(state))
    return path


def test_resume_point_only_resumes_an_unfinished_run_of_the_same_schedule(lab, tmp_path):
    args = T.sft_config(lab, tmp_path, max_steps=10, per_device_train_batch_size=2)
    assert T.resume_point(args) == (None, "no checkpoint")
    (tmp_path / "checkpoint-9").mkdir()  # interrupted while saving: no trainer_state.json, ignored
    fake_checkpoint(tmp_path, 4, 10)
    checkpoint, why = T.resume_point(args)
    assert Path(checkpoint).name == "checkpoint-4" and "step 4 of 10" in why
    fake_checkpoint(tmp_path, 10, 10)
    assert T.resume_point(args) == (None, f"{tmp_path / 'checkpoint-10'} is a finished run (step 10 of 10)")
    other = T.sft_config(lab, tmp_path, max_steps=20, per_device_train_batch_size=2)
    assert "belongs to another run (max_steps 10, batch 2)" in T.resume_point(other)[1]


def test_live_plot_prints_lines_outside_a_notebook_and_draws_rewards(capsys):
    plot, state, control = LivePlotCallback(notebook=False), TrainerState(), TrainerControl()
    for step, margin in ((1, 0.0), (2, 0.4)):
        state.global_step = step
        logs = {"loss": 0.69 - margin / 2, "rewards/chosen": margin / 2, "rewards/rejected": -margin / 2,
                "rewards/margins": margin}  # fmt: skip
        plot.on_log(None, state, control, logs=logs)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "loss 0.4900" in lines[1] and "rewards/margins 0.4000" in lines[1]
    fig = plot.draw()
    assert len(fig.axes) == 2 and len(fig.axes[1].get_lines()) == 3 + 1  # three rewards + the zero line


def test_live_plot_draws_a_resumed_run_in_its_own_cell_with_the_whole_curve(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, figure):
            shown.append(("update", len(figure.axes[0].get_lines()[0].get_xdata())))

    def display(figure, display_id=False):
        shown.append(("display", len(figure.axes[0].get_lines()[0].get_xdata())))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    plot, state, control = LivePlotCallback(notebook=True, min_interval=0.0), TrainerState(), TrainerControl()
    for steps in ((1, 2), (3, 4)):  # an interrupted run, then train() again (resumed): two cells
        plot.on_train_begin(None, state, control)
        for step in steps:
            state.global_step = step
            plot.on_log(None, state, control, logs={"loss": 1.0 / step})
    assert shown == [("display", 1), ("update", 2), ("display", 3), ("update", 4)]


def test_the_seed_reaches_ktos_lora_initialisation_through_the_presets(tiny_llama, tokenizer, lab, tmp_path):
    """LABS_SEED reaches KTO's adapter: TRL 1.16's KTOTrainer seeds (args.seed) before get_peft_model, so two
    seeds give two LoRA A matrices and the same seed the same one (KTO's data order is sequential, not seeded)."""
    from trl import KTOTrainer

    import labhelpers as lh

    pairs = preference_rows(2)
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
                            for r in pairs for k in ("chosen", "rejected")])  # fmt: skip
    first_a = {}
    for run, seed in enumerate((0, 1, 0)):
        seeded = lh.with_overrides(lab, seed=seed)
        args = T.kto_config(seeded, tmp_path / str(run), max_steps=1, per_device_train_batch_size=2,
                            save_strategy="no")
        trainer = KTOTrainer(model=copy.deepcopy(tiny_llama), args=args, train_dataset=ds,
                             processing_class=tokenizer, peft_config=T.lora_config(seeded))
        first_a[run] = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n).detach().clone()
    assert not torch.equal(first_a[0], first_a[1]), "seeds 0 and 1 gave KTO the same LoRA A matrix"
    assert torch.equal(first_a[0], first_a[2]), "seed 0 twice gave KTO two LoRA A matrices"
