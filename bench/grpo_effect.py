"""Does a smoke GRPO run (lab 12's planned preset) move the policy toward its better answers? Per seed, and its null.

Run by hand (not part of the tests), on the embedded model, from lab 03's adapter (``python -m labhelpers.runner
--labs 03`` first, else ``training.lab03_adapter`` trains it with lab 03's schedule); about 2 minutes per run on 2 idle CPU
cores, 6 runs with the defaults (seeds 0-2, each with its null):

    python bench/grpo_effect.py
    python bench/grpo_effect.py --seeds 0 --steps 4 --json outputs/bench/grpo.json

For every seed (``LABS_SEED``): merge lab 03's adapter into the embedded model, sample ``eval_samples``
completions for each of ``eval_prompts`` prompts of a **tuning slice** (train rows from ``TUNE_START`` on: no
profile trains on them, and they share no row with the held-out file the lab's Self-check reads), train
``GRPOTrainer`` with the profile's preset (``training.grpo_config``) and lab 12's two rewards, and re-score the
same samples with the trained policy (``SampledGroups.rescore``). Printed per run: the share of prompts with
reward spread whose per-token margin of better over worse samples grew (``SampledGroups.margins``: the measure
meant for lab 12's Self-check), the share of (better, worse) sample pairs whose per-token gap grew, and for comparison the importance-weighted expected reward
(``SampledGroups.reweighted``: rose/fell counts, its mean), the zero-spread share and the seconds of sampling,
training and scoring.

The **null** run trains the same way on shuffled rewards (each reward function's values permuted within the
generation batch by a seeded generator): as many updates of the same size, no information about which answer was
better. Its share of prompts whose margin grew is what a self-check's bound must stay above. (The
importance-weighted expected reward rises on the null run too: summed log-probs favour short samples under any
change, and the samples that ran out of tokens are format failures. The per-token margin does not.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

TUNE_START = 1000  # the first train row no profile trains on (labhelpers.profiles: sft_train_rows <= 1000)


def rewards(shuffle_seed: int | None):
    """Lab 12's rewards (format, right lab); with ``shuffle_seed`` each batch's values are permuted (the null)."""
    from labhelpers import task

    rng = random.Random(shuffle_seed)

    def maybe(values: list[float]) -> list[float]:
        if shuffle_seed is not None:
            rng.shuffle(values)
        return values

    def format_reward(completions, **kwargs):
        return maybe([1.0 if task.format_ok(c[0]["content"]) else 0.0 for c in completions])

    def lab_reward(completions, expected_lab, **kwargs):
        return maybe([1.0 if task.cited_lab(c[0]["content"]) == e else 0.0 for c, e in zip(completions, expected_lab, strict=False)])

    return [format_reward, lab_reward], [1.0, 1.0]


def rows(lh, task, start: int, n: int) -> list[dict]:
    data = lh.load_lab_dataset("sft", split="train").select(range(start, start + n))
    return [{"prompt": r["messages"][:-1], "expected_lab": e} for r, e in zip(data, task.expected_labs(data), strict=False)]


def run(seed: int, null: bool, steps: int | None, lr: float | None) -> dict:
    os.environ["LABS_SEED"] = str(seed)
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOTrainer

    import labhelpers as lh
    from labhelpers import task, training

    lab = lh.profile(verbose=False)
    g = lab.grpo
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
                              args=training.grpo_config(lab, Path(tmp) / "ckpt", reward_weights=weights,
                                                        save_strategy="no", **overrides),
                              train_dataset=Dataset.from_list(rows(lh, task, 0, lab.sft_train_rows)),
                              peft_config=training.lora_config(lab, lora_dropout=0.0))
        t0 = time.perf_counter()
        trainer.train()
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = groups.rescore(trainer.model, tokenizer)
        after = groups.reweighted(new)
        shift = [a - b for a, b in zip(groups.margins(new), groups.margins(), strict=False)]
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
            "share_pairs": gained_pairs / pairs if pairs else 0.0,
            "reward_before": sum(before) / len(before), "reward_after": sum(after) / len(after),
            "sample_s": round(t_sample, 1), "train_s": round(t_train, 1), "score_s": round(t_score, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override the preset's max_steps")
    parser.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    parser.add_argument("--no-null", action="store_true", help="skip the shuffled-reward runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    for seed in args.seeds:
        for null in (False,) if args.no_null else (False, True):
            r = run(seed, null, args.steps, args.lr)
            results.append(r)
            print(f"seed {seed} {'null ' if null else 'GRPO '}: rose on {r['rose']}/{r['spread']} prompts with spread "
                  f"({r['share_rose']:.0%}), fell on {r['fell']}; per-token shift up {r['share_shift']:.0%}; pairs gained {r['share_pairs']:.0%} of {r['pairs']}; expected reward {r['reward_before']:.3f} -> "
                  f"{r['reward_after']:.3f}; zero spread {r['zero_spread']:.0%}; sample {r['sample_s']} s, train "
                  f"{r['train_s']} s, score {r['score_s']} s", flush=True)
    print("\n| seed | run | prompts with spread | margin grew (share) | pairs gained (share) | "
          "expected reward rose / fell (IS) | expected reward (IS) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {'shuffled rewards' if r['null'] else 'GRPO'} | {r['spread']} | "
              f"{r['share_shift']:.2f} | {r['share_pairs']:.2f} of {r['pairs']} | {r['rose']} / {r['fell']} | "
              f"{r['reward_before']:.3f} -> {r['reward_after']:.3f} | {r['train_s']} |")
    grpo = [r["share_shift"] for r in results if not r["null"]]
    null = [r["share_shift"] for r in results if r["null"]]
    apart = bool(null) and min(grpo) > max(null)
    print(f"\nmargin grew: GRPO min {min(grpo):.2f}" + (f", null max {max(null):.2f}" if null else "")
          + ("" if not null else ": separated on every seed (a bound fits between)" if apart
             else ": NOT separated (no bound holds on every GRPO seed and fails every null)"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
