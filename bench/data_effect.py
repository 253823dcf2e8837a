"""Does the shipped data teach what it claims? Held-out effect of a short LoRA SFT run and a DPO run.

Run by hand (not part of the tests), on the embedded SmolLM2-135M model; about 7 minutes on 2 idle
CPU cores (the DPO run is the longer half):

    python bench/data_effect.py                                   # SFT as the smoke profile, DPO 40 x 4 pairs
    python bench/data_effect.py --dpo-steps 80 --eval-rows 120 --json outputs/bench/data_effect.json

1. SFT: LoRA with ``labhelpers.training.sft_config`` on the smoke profile (its steps, batch, learning rate),
   then on held-out SFT prompts: answer loss, and the task metric of greedy answers (``format_rate``,
   ``lab_accuracy``: ``labhelpers.task``).
2. DPO: LoRA with ``labhelpers.training.dpo_config`` for ``--dpo-steps`` steps of ``--dpo-batch`` pairs, then
   held-out preference accuracy and mean margin (``labhelpers.evaluation.preference_pairs``), and the share
   of held-out pairs whose margin grew. The held-out pairs are about facts no training row contains.

The lab notebooks' smoke runs are shorter (8 steps of 2 pairs): enough to move each method's own
reward margin, not held-out accuracy on unseen facts. This script measures what a longer run does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-rows", type=int, default=48, help="held-out rows per set (files have 120)")
    parser.add_argument("--dpo-steps", type=int, default=40)
    parser.add_argument("--dpo-batch", type=int, default=4)
    parser.add_argument("--dpo-lr", type=float, default=2e-4)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from trl import DPOTrainer, SFTTrainer

    import labhelpers as lh
    from labhelpers import data, evaluation, task, training

    lab = lh.profile()
    tokenizer = lh.load_tokenizer()
    work = Path(tempfile.mkdtemp(prefix="data_effect_"))
    out: dict = {"profile": lab.name, "model": lab.model, "eval_rows": args.eval_rows}
    try:
        # ---- SFT
        heldout = lh.load_lab_dataset("sft", split="heldout", limit=args.eval_rows)
        prompts = [data.prompt_messages(r) for r in heldout]
        expected = task.expected_labs(heldout)

        def sft_eval(model) -> dict:
            answers = lh.generate(model, tokenizer, prompts, max_new_tokens=lab.eval_max_new_tokens)
            loss = evaluation.heldout_loss(model, tokenizer, heldout, max_length=lab.max_length)
            return {"heldout_loss": loss, **task.task_metrics(answers, expected)}

        model = lh.load_model(for_training=True)
        before = sft_eval(model)
        trainer = SFTTrainer(
            model=model,
            args=training.sft_config(lab, work / "sft", save_strategy="no"),
            train_dataset=training.as_prompt_completion(lh.load_lab_dataset("sft", limit=lab.sft_train_rows)),
            processing_class=tokenizer,
            peft_config=training.lora_config(lab),
        )
        t0 = time.perf_counter()
        trainer.train()
        out["sft"] = {"steps": lab.sft_steps, "batch": lab.batch_size, "learning_rate": lab.learning_rate,
                      "train_s": time.perf_counter() - t0, "before": before, "after": sft_eval(trainer.model)}
        del trainer, model

        # ---- DPO
        pairs = lh.load_lab_dataset("preference", split="heldout", limit=args.eval_rows)
        model = lh.load_model()
        scored_before = evaluation.preference_pairs(model, tokenizer, pairs, max_length=lab.max_length)
        config = training.dpo_config(lab, work / "dpo", save_strategy="no", max_steps=args.dpo_steps,
                                     per_device_train_batch_size=args.dpo_batch, learning_rate=args.dpo_lr)
        train_rows = args.dpo_steps * args.dpo_batch
        trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer,
                             train_dataset=lh.load_lab_dataset("preference", limit=min(train_rows, 600)),
                             peft_config=training.lora_config(lab))
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        scored_after = evaluation.preference_pairs(trainer.model, tokenizer, pairs, max_length=lab.max_length)
        grew = sum(a["margin"] > b["margin"] for a, b in zip(scored_after, scored_before, strict=True))
        out["dpo"] = {"steps": args.dpo_steps, "batch": args.dpo_batch, "learning_rate": args.dpo_lr,
                      "train_s": train_s, "before": evaluation.summarize_pairs(scored_before),
                      "after": evaluation.summarize_pairs(scored_after), "pairs_margin_grew": grew / len(pairs)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    s, d = out["sft"], out["dpo"]
    print(f"\nheld-out effect on {lab.model} ({args.eval_rows} held-out rows per set)")
    print(f"{'measure':<38}{'before':>10}{'after':>10}")
    for key in ("heldout_loss", "format_rate", "lab_accuracy"):
        print(f"{'SFT ' + key:<38}{s['before'][key]:>10.3f}{s['after'][key]:>10.3f}")
    for key in ("accuracy", "accuracy_per_token", "margin", "margin_per_token"):
        print(f"{'DPO ' + key:<38}{d['before'][key]:>10.3f}{d['after'][key]:>10.3f}")
    print(f"SFT: {s['steps']} steps x batch {s['batch']}, lr {s['learning_rate']:g}, {s['train_s']:.0f} s; "
          f"DPO: {d['steps']} steps x {d['batch']} pairs, lr {d['learning_rate']:g}, {d['train_s']:.0f} s; "
          f"held-out pairs whose margin grew: {d['pairs_margin_grew']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print("wrote", args.json)


if __name__ == "__main__":
    main()
