"""What labs 03 and 04 can show, per seed: held-out loss, format rate, lab accuracy (smoke or full profile).

Run by hand (not part of the tests), on the embedded model; about 10 minutes on 2 idle CPU cores (smoke):

    python bench/sft_effect.py                                  # seeds 0-2, lab 03 and lab 04 runs
    python bench/sft_effect.py --seeds 0 --neftune-steps 10 --eval-rows 32 --json outputs/bench/sft.json

The full profile's schedule on the embedded model (each lab 03 run at the
full shape, 4 packed rows of 1,024 tokens per step, takes about half an hour on 2 cores):

    LABS_PROFILE=full LABS_MODEL=embedded python bench/sft_effect.py --seeds 0 --neftune-steps 0 \
        --lr 2e-4 --scheduler constant_with_warmup --rows 500 --micro-batch 1 --show 3

``--rows``, ``--lr``, ``--scheduler``, ``--epochs``, ``--batch``, ``--micro-batch`` override the profile's values
(the steps follow from them through ``lh.schedule``, as in the lab); ``--batch`` is packed rows per optimizer step
(the profile's ``batch_size``), ``--micro-batch`` the profile's ``sft_micro_batch``, packed rows per forward pass
(the rest of a step's rows by gradient accumulation: the same optimizer steps). ``--eval-every N`` also answers
the held-out prompts every N steps of the same run (format rate and lab accuracy as training goes: one run, a
curve, in the JSON's ``curve``).

- **lab 03**: LoRA SFT as the lab trains it (``training.sft_config``: packed, the profile's steps).
- **lab 04**: the same recipe unpacked (NEFTune's noise bound depends on the sequence length), for
  ``--neftune-steps`` steps, without and with ``neftune_noise_alpha``, same seed.

Each run answers ``--eval-rows`` held-out prompts (greedy) and reports ``labhelpers.task`` metrics; chance
for lab accuracy is 1/11 (eleven labs). The labs' self-check bounds are chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


class _Curve:
    """A TrainerCallback (duck-typed) that answers the held-out prompts every ``every`` steps, in eval mode."""

    def __init__(self, every: int, tokenizer, prompts, expected, lab, out: list) -> None:
        self.every, self.tokenizer, self.prompts, self.expected, self.lab, self.out = (
            every, tokenizer, prompts, expected, lab, out)

    def __getattr__(self, name: str):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step % self.every and state.global_step != state.max_steps:
            return
        import labhelpers as lh
        from labhelpers import task

        was_training = model.training
        answers = lh.generate(model, self.tokenizer, self.prompts, max_new_tokens=self.lab.eval_max_new_tokens)
        model.train(was_training)
        metrics = task.task_metrics(answers, self.expected)
        self.out.append({"step": state.global_step, "epoch": round(state.epoch or 0, 2),
                         "format_rate": metrics["format_rate"], "lab_accuracy": metrics["lab_accuracy"]})
        print(f"  step {state.global_step}/{state.max_steps} (epoch {state.epoch:.2f}): format "
              f"{metrics['format_rate']:.3f}, lab accuracy {metrics['lab_accuracy']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-rows", type=int, default=None, help="held-out prompts; default: the profile's")
    parser.add_argument("--neftune-steps", type=int, default=None, help="lab 04's steps per run; 0: skip lab 04")
    parser.add_argument("--alpha", type=float, default=5.0)
    parser.add_argument("--skip-lab03", action="store_true")
    parser.add_argument("--rows", type=int, default=None, help="training rows; default: the profile's")
    parser.add_argument("--lr", type=float, default=None, help="SFT learning rate; default: the profile's")
    parser.add_argument("--scheduler", default=None, help="lr_scheduler_type; default: the profile's")
    parser.add_argument("--epochs", type=float, default=None, help="full profile: SFT epochs; default: the profile's")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="rows per forward pass; the rest of each step's rows by gradient accumulation")
    parser.add_argument("--batch", type=int, default=None,
                        help="packed rows per optimizer step; default: the profile's")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also measure format rate and lab accuracy every this many steps (one run, a curve)")
    parser.add_argument("--show", type=int, default=0, help="print this many held-out answers per run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from trl import SFTTrainer

    import labhelpers as lh
    from labhelpers import data, evaluation, task, training

    base = lh.profile(verbose=False)
    changes = {k: v for k, v in (("eval_rows", args.eval_rows), ("sft_train_rows", args.rows),
                                 ("learning_rate", args.lr), ("lr_scheduler", args.scheduler),
                                 ("sft_epochs", args.epochs)) if v is not None}  # fmt: skip
    if args.micro_batch:
        changes["sft_micro_batch"] = args.micro_batch
    if args.batch:
        changes["batch_size"] = args.batch
    base = lh.with_overrides(base, **changes)
    base.sft_accum  # noqa: B018 (refuses a micro-batch that does not divide the batch)
    print(base.summary(), flush=True)
    tokenizer = lh.load_tokenizer()
    train_rows = training.as_prompt_completion(lh.load_lab_dataset("sft", limit=base.sft_train_rows))
    heldout = lh.load_lab_dataset("sft", split="heldout", limit=base.eval_rows)
    prompts = [data.prompt_messages(r) for r in heldout]
    expected = task.expected_labs(heldout)
    work = Path(tempfile.mkdtemp(prefix="sft_effect_"))
    runs = []

    def one(name: str, seed: int, **overrides) -> None:
        lab = lh.with_overrides(base, seed=seed)
        curve: list[dict] = []
        trainer = SFTTrainer(model=lh.load_model(for_training=True),
                             args=training.sft_config(lab, work / name, save_strategy="no", **overrides),
                             train_dataset=train_rows, processing_class=tokenizer,
                             peft_config=training.lora_config(lab),
                             callbacks=[_Curve(args.eval_every, tokenizer, prompts, expected, lab, curve)]
                             if args.eval_every else None)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        answers = lh.generate(trainer.model, tokenizer, prompts, max_new_tokens=lab.eval_max_new_tokens)
        for prompt, answer in list(zip(prompts, answers, strict=True))[: args.show]:
            print(f"  Q: {prompt[-1]['content']}\n  A: {answer!r}")
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        run = {"run": name, "seed": seed, "steps": trainer.args.max_steps, "train_s": round(train_s, 1),
               "learning_rate": lab.learning_rate, "lr_scheduler": lab.lr_scheduler, "rows": lab.sft_train_rows,
               "rows_per_step": lab.batch_size * lab.grad_accum, "rows_per_forward": lab.sft_forward_rows,
               "max_length": lab.max_length, "curve": curve,
               "train_loss_first_last": [losses[0], losses[-1]] if losses else None,
               "heldout_loss": evaluation.heldout_loss(trainer.model, tokenizer, heldout, max_length=lab.max_length),
               **task.task_metrics(answers, expected)}
        runs.append(run)
        print(f"{name:18} seed {seed}: {run['steps']} steps, held-out loss {run['heldout_loss']:.3f}, format "
              f"{run['format_rate']:.3f}, lab accuracy {run['lab_accuracy']:.3f} (n={run['n']}), train {train_s:.0f} s",
              flush=True)

    try:
        for seed in args.seeds:
            if not args.skip_lab03:
                one("lab03 packed", seed)
            if args.neftune_steps != 0:
                steps = args.neftune_steps or base.sft_steps
                one("lab04 plain", seed, packing=False, max_steps=steps)
                one(f"lab04 alpha={args.alpha:g}", seed, packing=False, max_steps=steps,
                    neftune_noise_alpha=args.alpha)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"chance lab accuracy: {1 / 11:.3f}; held-out prompts: {len(prompts)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": base.name, "model": base.model, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
