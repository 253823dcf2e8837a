"""Do the preference labs' smoke runs show their method working? Held-out effect per method and seed.

Run by hand (not part of the tests), on the embedded model; about 15 minutes on 2 idle CPU cores with the
defaults (4 methods x 3 seeds, each trained as its lab trains it on the smoke profile):

    python bench/preference_effect.py
    python bench/preference_effect.py --methods dpo orpo --seeds 0 --steps 12 --json outputs/bench/pref.json

For every method and seed (``LABS_SEED``, the trainers' seed): train a LoRA adapter with the lab's preset
(``labhelpers.training.<method>_config`` on the current profile, with the overrides given here), then score
the held-out pairs with ``labhelpers.preference`` exactly as labs 06-09 do, and print

- the share of held-out pairs whose margin grew (the margin the method optimises: summed for DPO and KTO,
  per token for SimPO and ORPO), which the labs' self-checks require above 0.5;
- accuracy before -> after, overall and per kind of rejected answer (broken format, wrong lab, wrong fact);
- training and scoring seconds.

The pairs scored are a **tuning slice** of the train split by default (``--on tune``): the train pairs from
row ``TUNE_START`` on (no profile trains on them: the full profile trains on the first 500, the smoke on the
first 128), less any whose prompt is among the KTO rows the profile trains on. It shares no prompt with the
held-out pairs the labs' Self-checks read, so the settings and bounds chosen here are not chosen on the pairs
they are asserted on. ``--on heldout`` scores the labs' own held-out pairs instead (what the labs print).

The last lines put each lab's bound beside the value of every seed, and say whether every method held the
self-check bounds on every seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

METHODS = ("dpo", "simpo", "orpo", "kto")
TUNE_START = 500  # the first train pair no profile trains on (labhelpers.profiles: pref_train_rows <= 500)

# The labs' Self-check bounds (labs 06-09, cell "Self-check"), per method: (figure, the lab's constant, bound,
# "above" (strictly) or "min"); tests/test_notebooks.py checks that the labs still name these values.
BOUNDS: dict[str, list[tuple[str, str, float, str]]] = {
    "dpo": [("improved", "MIN_IMPROVED", 0.5, "above"), ("fmt_up", "MIN_FMT_UP", 0.9, "min"),
            ("fmt_rise", "-MAX_FMT_DROP", 0.0, "min")],
    "simpo": [("improved", "MIN_IMPROVED", 0.5, "above"), ("fmt_up", "MIN_FMT_UP", 0.9, "min"),
              ("fmt_rise", "MIN_FMT_RISE", 0.15, "min")],
    "orpo": [("improved", "MIN_IMPROVED", 0.5, "above"), ("fmt_up", "MIN_FMT_UP", 0.9, "min"),
             ("fmt_rise", "MIN_FMT_RISE", 0.25, "min"), ("logp_rise", "MIN_LOGP_RISE", 5.0, "min")],
    "kto": [("improved", "MIN_IMPROVED", 0.5, "above"), ("fmt_up", "MIN_FMT_UP", 0.9, "min"),
            ("fmt_rise", "-MAX_FMT_DROP", 0.0, "min"), ("desirable_fall", "MIN_DESIRABLE_FALL", 0.1, "above")],
}


def tuning_slice(lh, lab) -> list[dict]:
    """Train pairs from ``TUNE_START`` on whose prompt no training rows of ``lab`` (pairs or KTO rows) hold."""
    if lab.pref_train_rows > TUNE_START:
        raise SystemExit(f"profile {lab.name} trains on {lab.pref_train_rows} pairs: the tuning slice starts at "
                         f"{TUNE_START}, so it would overlap; lower pref_train_rows or raise TUNE_START.")
    trained = {str(r["prompt"]) for r in lh.load_lab_dataset("kto", split="train", limit=lab.kto_train_rows)}
    trained |= {str(r["prompt"]) for r in lh.load_lab_dataset("preference", split="train", limit=lab.pref_train_rows)}
    heldout = {str(r["prompt"]) for r in lh.load_lab_dataset("preference", split="heldout")}
    rows = list(lh.load_lab_dataset("preference", split="train"))[TUNE_START:]
    kept = [r for r in rows if str(r["prompt"]) not in trained]
    if any(str(r["prompt"]) in heldout for r in kept):
        raise SystemExit("the tuning slice shares a prompt with the held-out pairs: the data files changed.")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's")
    parser.add_argument("--batch", type=int, default=None, help="pairs (KTO: rows) per step; default: the profile's")
    parser.add_argument("--lr", type=float, default=None, help="default: the profile's")
    parser.add_argument("--beta", type=float, default=None, help="the methods' beta (ORPO: lambda); default: presets")
    parser.add_argument("--on", choices=("tune", "heldout"), default="tune",
                        help="score the tuning slice of the train split (default) or the labs' held-out pairs")
    parser.add_argument("--eval-rows", type=int, default=None,
                        help="held-out pairs (--on heldout); default: the profile's")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from trl import DPOTrainer, KTOTrainer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    import labhelpers as lh
    from labhelpers import evaluation, preference, training

    base_lab = lh.profile(verbose=False)
    changes = {k: v for k, v in (("pref_steps", args.steps), ("pref_batch_size", args.batch),
                                 ("pref_learning_rate", args.lr), ("pref_eval_rows", args.eval_rows)) if v is not None}
    if args.lr is not None:
        changes["orpo_learning_rate"] = args.lr  # ORPO has its own rate on the smoke profile; --lr sets both
    base_lab = lh.with_overrides(base_lab, **changes)
    tokenizer = lh.load_tokenizer()
    if args.on == "tune":
        from datasets import Dataset

        heldout = Dataset.from_list(tuning_slice(lh, base_lab))
    else:
        heldout = lh.load_lab_dataset("preference", split="heldout", limit=base_lab.pref_eval_rows)
    pairs_train = lh.load_lab_dataset("preference", split="train", limit=base_lab.pref_train_rows)
    kto_train = lh.load_lab_dataset("kto", split="train", limit=base_lab.kto_train_rows)
    trainers = {"dpo": (DPOTrainer, training.dpo_config, pairs_train, "summed"),
                "simpo": (CPOTrainer, training.simpo_config, pairs_train, "per_token"),
                "orpo": (ORPOTrainer, training.orpo_config, pairs_train, "per_token"),
                "kto": (KTOTrainer, training.kto_config, kto_train, "summed")}
    print(f"profile {base_lab.name}: {base_lab.pref_steps} steps x {base_lab.pref_batch_size}, "
          f"lr {base_lab.pref_learning_rate:g}, scored on {len(heldout)} pairs of the "
          + (f"tuning slice (train rows from {TUNE_START} on, none trained on)" if args.on == "tune"
             else "held-out split (the labs' Self-check pairs)"))

    t0 = time.perf_counter()
    model = lh.load_model()
    before = preference.HeldoutScores(
        evaluation.preference_pairs(model, tokenizer, heldout, batch_size=16, max_length=base_lab.max_length), [], {})
    # KTO's own objective, as lab 09 reads it: the answer loss (nats/token) of thumbs-up answers to unseen prompts,
    # here the chosen answers of the pairs scored
    thumbs_up = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in heldout]
    desirable_before = evaluation.heldout_loss(model, tokenizer, thumbs_up, max_length=base_lab.max_length)
    score_s = time.perf_counter() - t0
    del model
    work = Path(tempfile.mkdtemp(prefix="pref_effect_"))
    runs = []
    try:
        for method in args.methods:
            trainer_cls, make_config, rows, measure = trainers[method]
            for seed in args.seeds:
                lab = lh.with_overrides(base_lab, seed=seed)
                model = lh.load_model()
                extra = {"beta": args.beta} if args.beta is not None else {}
                config = make_config(lab, work / f"{method}{seed}", save_strategy="no", **extra)
                if method == "kto":  # as lab 09: TRL reads KTO's rows in order, so the seed shuffles them
                    rows = trainers["kto"][2].shuffle(seed=seed)
                trainer = trainer_cls(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
                                      peft_config=training.lora_config(lab))
                t1 = time.perf_counter()
                trainer.train()
                train_s = time.perf_counter() - t1
                t2 = time.perf_counter()
                after = preference.HeldoutScores(evaluation.preference_pairs(
                    trainer.model, tokenizer, heldout, batch_size=16, max_length=lab.max_length), [], {})
                cmp = preference.compare_heldout(method, before, after, heldout, measure=measure)
                run = {"method": method, "seed": seed, "measure": measure, "train_s": round(train_s, 1),
                       "score_s": round(time.perf_counter() - t2, 1), "improved": cmp.improved,
                       "accuracy": [cmp.accuracy("before"), cmp.accuracy("after")],
                       "by_kind": {k: [cmp.accuracy("before", k), cmp.accuracy("after", k), cmp.improved_in(k)]
                                   for k in sorted(set(cmp.kinds))}}
                fmt = run["by_kind"]["broken_format"]
                run["fmt_up"], run["fmt_rise"] = fmt[2], fmt[1] - fmt[0]
                run["logp_rise"] = after.summary["chosen_logp"] - before.summary["chosen_logp"]
                if method == "kto":
                    run["desirable_fall"] = desirable_before - evaluation.heldout_loss(
                        trainer.model, tokenizer, thumbs_up, max_length=lab.max_length)
                run["improved_by_measure"] = {
                    m: preference.compare_heldout(method, before, after, heldout, measure=m).improved
                    for m in preference.MEASURES}
                runs.append(run)
                kinds = "  ".join(f"{k}: {v[0]:.2f}->{v[1]:.2f} ({v[2]:.2f} up)" for k, v in run["by_kind"].items())
                print(f"{method:5} seed {seed}: improved {run['improved']:.3f}  accuracy {run['accuracy'][0]:.3f}->"
                      f"{run['accuracy'][1]:.3f} (by measure: "
                      f"{', '.join(f'{m} {v:.3f}' for m, v in run['improved_by_measure'].items())})  | {kinds} | "
                      f"train {train_s:.0f} s, score {run['score_s']:.0f} s",
                      flush=True)
                del trainer, model
    finally:
        shutil.rmtree(work, ignore_errors=True)
    def passes(run: dict, name: str, bound: float, how: str) -> bool:
        return run[name] > bound if how == "above" else run[name] >= bound

    def holds(run: dict) -> bool:
        """Every bound of the method's lab (``BOUNDS``) on this run."""
        return all(passes(run, name, bound, how) for name, _, bound, how in BOUNDS[run["method"]])

    print(f"\nThe labs' Self-check bounds beside each seed's value ({args.on} pairs; * = outside the bound):")
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        for name, const, bound, how in BOUNDS[method]:
            cells = "  ".join(f"seed {r['seed']}: {r[name]:7.3f}{' ' if passes(r, name, bound, how) else '*'}"
                              for r in mine)
            rel = ">" if how == "above" else ">="
            print(f"  {method:5} {name:9} {rel} {bound:<5g} ({const:14}) | {cells}")
    held = all(holds(r) for r in runs)
    print(f"before-scoring took {score_s:.0f} s (model load included). The labs' self-check bounds hold on every "
          f"run: {held}" + ("" if held else f"; not on {[(r['method'], r['seed']) for r in runs if not holds(r)]}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": base_lab.name, "on": args.on, "pairs": len(heldout),
                                         "settings": changes, "cpu_count": os.cpu_count(),
                                         "runs": runs, "held": held}, indent=1))


if __name__ == "__main__":
    main()
