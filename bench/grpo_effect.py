"""Does a smoke GRPO run (lab 12's preset) move the policy toward its better answers? Per seed, and its null.

Run by hand (not part of the tests), on the embedded model, from lab 03's adapter (``python -m labhelpers.harness.runner
--labs 03`` first, else ``training.lab03_adapter`` trains it with lab 03's schedule); about 1.5 minutes per run on 2
idle CPU cores, 6 runs with the defaults (seeds 0-2, each with its null):

    python bench/grpo_effect.py
    python bench/grpo_effect.py --seeds 0 --steps 8 --json outputs/bench/grpo.json

For every seed (``LABS_SEED``): merge lab 03's adapter into the embedded model, sample ``eval_samples``
completions for each of ``eval_prompts`` prompts of a **tuning slice** (train rows from ``TUNE_START`` on: no
profile trains on them, and they share no row with the held-out file lab 12 reads), train ``GRPOTrainer`` with the
profile's preset (``training.grpo_config``) and lab 12's two rewards, then measure:

- **on the completions GRPO trained on** (TRL's buffer of the last generation call; lab 12's Self-check): of those
  whose true reward differs from their group's mean, the share whose log-prob per token moved, relative to their
  group's mean change, in the direction of that difference (``trained_moved``);
- **on the tuning slice** (reported, as lab 12 reports its held-out prompts): the same samples re-scored by the
  trained policy (``SampledGroups.rescore``): the share of prompts with reward spread whose per-token margin of
  better over worse samples grew (``SampledGroups.margins``), the share of (better, worse) sample pairs whose
  per-token gap grew, the format reward's margin alone, and the importance-weighted expected reward
  (``SampledGroups.reweighted``: rose/fell counts, its mean).

The **null** run trains the same way on shuffled rewards (each reward function's values permuted within the
generation batch by a seeded generator): as many updates of the same size, no information about which answer was
better; its measures use the true rewards. A Self-check's bound must lie above every null and below every GRPO
seed. (The importance-weighted expected reward rises on the null run too: summed log-probs favour short samples
under any change, and the samples that ran out of tokens are format failures. The per-token margin does not.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from pathlib import Path

TUNE_START = 1000  # the first train row no profile trains on (labhelpers.profiles: sft_train_rows <= 1000)


TRUE: dict[str, dict[str, float]] = {}  # completion text -> its unshuffled rewards (the null's truth)


def rewards(shuffle_seed: int | None):
    """Lab 12's rewards (format, right lab); with ``shuffle_seed`` each batch's values are permuted (the null)."""
    from labhelpers import task

    rng = random.Random(shuffle_seed)

    def maybe(values: list[float]) -> list[float]:
        if shuffle_seed is not None:
            rng.shuffle(values)
        return values

    def format_reward(completions, **kwargs):
        values = [1.0 if task.format_ok(c[0]["content"]) else 0.0 for c in completions]
        for c, v in zip(completions, values, strict=True):
            TRUE.setdefault(c[0]["content"], {})["format"] = v
        return maybe(values)

    def lab_reward(completions, expected_lab, **kwargs):
        values = [1.0 if task.cited_lab(c[0]["content"]) == e else 0.0
                  for c, e in zip(completions, expected_lab, strict=True)]
        for c, v in zip(completions, values, strict=True):
            TRUE.setdefault(c[0]["content"], {})["lab"] = v
        return maybe(values)

    return [format_reward, lab_reward], [1.0, 1.0]


def rows(lh, task, start: int, n: int) -> list[dict]:
    data = lh.load_lab_dataset("sft", split="train").select(range(start, start + n))
    return [{"prompt": r["messages"][:-1], "expected_lab": e}
            for r, e in zip(data, task.expected_labs(data), strict=False)]


def trained_moved(trainer, tokenizer, weights) -> tuple[int, int]:
    """On the completions GRPO trained on (the last generation call, TRL's buffer): how many with a non-zero
    advantage moved, in per-token log-prob relative to their group's mean change, in the advantage's direction."""
    import torch

    rows = []  # (prompt key, advantage, mean per-token log-prob change)
    for b in trainer._buffered_inputs:
        ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
        att = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
        n = b["completion_ids"].size(1)
        with torch.no_grad():
            logits = trainer.model(input_ids=ids, attention_mask=att).logits[:, -n - 1 : -1].float()
        logps = (torch.log_softmax(logits / trainer.temperature, -1)
                 .gather(-1, b["completion_ids"].unsqueeze(-1)).squeeze(-1))
        mask = b["completion_mask"].float()
        delta = ((logps - b["old_per_token_logps"]) * mask).sum(1) / mask.sum(1).clamp(min=1)
        for i in range(ids.size(0)):
            key = tuple(b["prompt_ids"][i][b["prompt_mask"][i].bool()].tolist())
            text = tokenizer.decode(b["completion_ids"][i][b["completion_mask"][i].bool()], skip_special_tokens=True)
            true = TRUE[text]
            rows.append((key, weights[0] * true["format"] + weights[1] * true["lab"], float(delta[i])))
    groups: dict = {}
    for key, a, d in rows:
        groups.setdefault(key, []).append((a, d))
    moved = total = 0
    for members in groups.values():  # true advantage sign: reward above / below its group's mean
        mean_d = sum(d for _, d in members) / len(members)
        mean_r = sum(r for r, _ in members) / len(members)
        for r, d in members:
            if abs(r - mean_r) > 1e-6:
                total += 1
                moved += (d - mean_d) * (r - mean_r) > 0
    return moved, total


def run(seed: int, null: bool, steps: int | None, lr: float | None, tokens: int | None = None,
        format_only: bool = False) -> dict:
    os.environ["LABS_SEED"] = str(seed)
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOTrainer

    import labhelpers as lh
    from labhelpers import task, training

    lab = lh.profile(verbose=False)
    g = lab.grpo if tokens is None else dataclasses.replace(lab.grpo, completion_tokens=tokens)
    lab = dataclasses.replace(lab, grpo=g)
    if lab.sft_train_rows > TUNE_START:
        raise SystemExit(f"profile {lab.name} trains on {lab.sft_train_rows} rows: the tuning slice would overlap.")
    tokenizer = lh.load_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = training.lab03_adapter(lab, Path(tmp) / "sft", quick=False)
        model = PeftModel.from_pretrained(lh.load_model(for_training=True), str(adapter)).merge_and_unload()
        funcs, weights = rewards(None)
        t0 = time.perf_counter()
        groups = lh.sample_groups(model, tokenizer, rows(lh, task, TUNE_START, g.eval_prompts), funcs, weights,
                                  k=g.eval_samples, max_new_tokens=g.completion_tokens, temperature=g.temperature,
                                  seed=lab.seed)
        t_sample = time.perf_counter() - t0
        train_funcs, _ = rewards(seed + 1000 if null else None)
        overrides = {k: v for k, v in (("max_steps", steps), ("learning_rate", lr)) if v is not None}
        trainer = GRPOTrainer(model=model, reward_funcs=train_funcs, processing_class=tokenizer,
                              args=training.grpo_config(lab, Path(tmp) / "ckpt",
                                                        reward_weights=[1.0, 0.0] if format_only else weights,
                                                        save_strategy="no", **overrides),
                              train_dataset=Dataset.from_list(rows(lh, task, 0, lab.sft_train_rows)),
                              peft_config=training.lora_config(lab, lora_dropout=0.0))
        t0 = time.perf_counter()
        trainer.train()
        t_train = time.perf_counter() - t0
        moved, movable = trained_moved(trainer, tokenizer, [1.0, 0.0] if format_only else weights)
        per_call = [(h["step"], h["rewards/format_reward/mean"], h["rewards/lab_reward/mean"])
                    for h in trainer.state.log_history if "rewards/format_reward/mean" in h]
        t0 = time.perf_counter()
        new = groups.rescore(trainer.model, tokenizer)
        after = groups.reweighted(new)
        shift = [a - b for a, b in zip(groups.margins(new), groups.margins(), strict=False)]
        fmt = dataclasses.replace(groups, rewards=[[1.0 if task.format_ok(c) else 0.0 for c in cs]
                                                   for cs in groups.completions])
        fmt_shift = [a - b for a, b in zip(fmt.margins(new), fmt.margins(), strict=True)]
        fmt_spread = [i for i, r in enumerate(fmt.rewards) if len(set(r)) > 1]
        t_score = time.perf_counter() - t0
    before = groups.expected_reward
    spread = [i for i, r in enumerate(groups.rewards) if len(set(r)) > 1]
    rose = sum(after[i] > before[i] + 1e-6 for i in spread)
    fell = sum(after[i] < before[i] - 1e-6 for i in spread)
    shifted = sum(shift[i] > 0 for i in spread)
    pairs = gained_pairs = 0  # (better, worse) sample pairs of one prompt whose per-token log-prob gap grew
    for g, r in enumerate(groups.rewards):
        per_token = [(o / n, m / n) for o, m, n in zip(groups.logps[g], new[g], groups.lengths[g], strict=True)]
        for i in range(len(r)):
            for j in range(len(r)):
                if r[i] > r[j]:
                    pairs += 1
                    gained_pairs += per_token[i][1] - per_token[j][1] > per_token[i][0] - per_token[j][0]
    return {"seed": seed, "null": null, "spread": len(spread), "rose": rose, "fell": fell,
            "share_rose": rose / len(spread) if spread else 0.0, "zero_spread": groups.zero_spread,
            "share_shift": shifted / len(spread) if spread else 0.0, "pairs": pairs,
            "per_call": per_call, "trained_moved": moved, "trained_movable": movable,
            "trained_share": moved / max(1, movable), "fmt_spread": len(fmt_spread),
            "fmt_share": sum(fmt_shift[i] > 0 for i in fmt_spread) / max(1, len(fmt_spread)),
            "share_pairs": gained_pairs / pairs if pairs else 0.0,
            "reward_before": sum(before) / len(before), "reward_after": sum(after) / len(after),
            "sample_s": round(t_sample, 1), "train_s": round(t_train, 1), "score_s": round(t_score, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override the preset's max_steps")
    parser.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    parser.add_argument("--format-only", action="store_true",
                        help="the reward-hacking run: train on the format reward alone (weights 1, 0), no null")
    parser.add_argument("--tokens", type=int, default=None, help="override completion_tokens")
    parser.add_argument("--no-null", action="store_true", help="skip the shuffled-reward runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    for seed in args.seeds:
        for null in (False,) if args.no_null or args.format_only else (False, True):
            r = run(seed, null, args.steps, args.lr, args.tokens, args.format_only)
            results.append(r)
            print(f"seed {seed} {'null ' if null else 'GRPO '}: TRAINED completions moved with their advantage "
                  f"{r['trained_moved']}/{r['trained_movable']} ({r['trained_share']:.0%}); "
                  f"rose on {r['rose']}/{r['spread']} prompts with spread "
                  f"({r['share_rose']:.0%}), fell on {r['fell']}; per-token shift up {r['share_shift']:.0%}; "
                  f"pairs gained {r['share_pairs']:.0%} of {r['pairs']}; "
                  f"format margin up {r['fmt_share']:.0%} of {r['fmt_spread']}; "
                  f"expected reward {r['reward_before']:.3f} -> "
                  f"{r['reward_after']:.3f}; zero spread {r['zero_spread']:.0%}; sample {r['sample_s']} s, train "
                  f"{r['train_s']} s, score {r['score_s']} s", flush=True)
            print("  per generation call (step, format reward, right-lab reward, TRL's log): "
                  + "; ".join(f"{s} {f:.2f} {lab:.2f}" for s, f, lab in r["per_call"]), flush=True)
    print("\n| seed | run | trained completions moved with their advantage (lab 12's Self-check) | held-out prompts "
          "with spread | held-out margin grew | held-out pairs gained | held-out IS expected reward rose / fell | "
          "train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {'shuffled rewards' if r['null'] else 'GRPO'} | {r['trained_share']:.2f} "
              f"({r['trained_moved']} of {r['trained_movable']}) | {r['spread']} | {r['share_shift']:.2f} | "
              f"{r['share_pairs']:.2f} of {r['pairs']} | {r['rose']} / {r['fell']} | {r['train_s']} |")
    for key, name in (("trained_share", "trained completions moved"), ("share_shift", "held-out margin grew")):
        grpo = [r[key] for r in results if not r["null"]]
        null = [r[key] for r in results if r["null"]]
        apart = bool(null) and min(grpo) > max(null)
        print(f"{name}: GRPO min {min(grpo):.2f}" + (f", null max {max(null):.2f}" if null else "")
              + ("" if not null else ": separated on every seed (a bound fits between)" if apart
                 else ": NOT separated (no bound holds on every GRPO seed and fails every null)"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
