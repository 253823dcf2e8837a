"""SFT throughput on a CPU: the labs' default (packed, padding-free) path vs naive padded batches.

Same model (the embedded SmolLM2-135M, fp32, LoRA r=16 on every linear layer), same data (the first
``--rows`` rows of data/sft_train.jsonl as prompt/completion, loss on the answer only), same number
of optimizer steps and the same ``per_device_train_batch_size``:

- default: ``labhelpers.training.sft_config`` as the labs use it: ``packing=True`` with TRL's
  best-fit-decreasing strategy and ``padding_free=True``; a batch is one flat sequence, no padding.
- naive:   ``packing=False`` and every batch padded to ``max_length``
  (``pad_to_multiple_of=max_length``), i.e. ``padding="max_length"`` as many notebooks tokenise.
- dynamic (``--dynamic``): ``packing=False``, each batch padded to its longest row (TRL's default
  without packing), for reference.

Reported per mode: trained (non-pad) tokens per second of optimizer-step time, the fraction of tensor
positions that are real tokens, answer (loss) tokens, examples per second. The first step of each
mode is a warm-up and is not timed. Run it by hand (not part of the tests):

    python bench/throughput.py --json throughput.json   # ~2.5 min on 2 idle CPU cores (300 CPU-s)
    python bench/throughput.py --batch 4 --steps 3 --dynamic   # the smoke profile's batch; ~3x longer

Measured on this project's 2-core CI box while it was heavily shared (the process got 23 % of the CPU,
so absolute rates are low and the load varied between the two modes): default 3.0 vs naive 1.2 trained
tokens/s = 2.45x, non-pad 100 % vs 32.5 % (SFT rows average 86 tokens; naive pads them to 256).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LABS_PROFILE", "smoke")


def run_mode(mode: str, base, tokenizer, rows, lab, steps: int, batch: int, max_length: int) -> dict:
    """Train ``steps`` (+1 warm-up) optimizer steps in one mode; return what ThroughputCallback measured."""
    from trl import SFTTrainer

    from labhelpers import training as T
    from labhelpers.callbacks import ThroughputCallback

    overrides = dict(
        max_steps=steps + 1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_length=max_length,
        save_strategy="no",
        logging_steps=steps + 1,
        disable_tqdm=True,
    )
    if mode == "naive":
        overrides.update(packing=False, pad_to_multiple_of=max_length)
    elif mode == "dynamic":
        overrides.update(packing=False)
    with tempfile.TemporaryDirectory() as out:
        meter = ThroughputCallback(skip_first=1)
        trainer = SFTTrainer(model=copy.deepcopy(base), args=T.sft_config(lab, out, **overrides),
                             train_dataset=rows, processing_class=tokenizer, peft_config=T.lora_config(lab),
                             callbacks=[meter])  # fmt: skip
        examples = (
            sum(len(r.get("seq_lengths", [0])) for r in trainer.train_dataset) if mode == "default" else None
        )
        t0 = time.perf_counter()
        T.train(trainer, resume=False, label=mode)
        wall = time.perf_counter() - t0
    stats = meter.summary()
    per_row = (examples / len(trainer.train_dataset)) if examples else 1.0  # examples per packed row
    return {
        "mode": mode,
        "steps_timed": stats["steps_timed"],
        "trained_tokens_per_s": stats["tokens_per_s"],
        "nonpad_fraction": stats["nonpad_fraction"],
        "trained_tokens": stats["trained_tokens"],
        "answer_tokens": stats["loss_tokens"],
        "examples_per_s": batch * per_row * stats["steps_timed"] / stats["step_seconds"],
        "step_seconds": stats["step_seconds"],
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=3, help="timed optimizer steps per mode (plus 1 warm-up)"
    )
    parser.add_argument("--batch", type=int, default=2, help="per-device batch, rows per step (profile: 4)")
    parser.add_argument("--max-length", type=int, default=None, help="default: the profile's max_length")
    parser.add_argument("--rows", type=int, default=48, help="rows of data/sft_train.jsonl to use")
    parser.add_argument("--dynamic", action="store_true", help="also measure pad-to-longest batches")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import torch

    from labhelpers import training as T
    from labhelpers.data import load_lab_dataset
    from labhelpers.models import load_model, load_tokenizer
    from labhelpers.profiles import profile

    if args.threads:
        torch.set_num_threads(args.threads)
    lab = profile(verbose=False)
    batch = args.batch
    max_length = args.max_length or lab.max_length
    tokenizer = load_tokenizer("model")
    base = load_model("model", dtype=torch.float32, for_training=True)
    rows = T.as_prompt_completion(load_lab_dataset("sft", limit=args.rows))
    modes = ["default", "naive"] + (["dynamic"] if args.dynamic else [])
    results = [run_mode(m, base, tokenizer, rows, lab, args.steps, batch, max_length) for m in modes]

    by_mode = {r["mode"]: r for r in results}
    ratio = by_mode["default"]["trained_tokens_per_s"] / by_mode["naive"]["trained_tokens_per_s"]
    threads = torch.get_num_threads()
    print(f"\nSFT throughput, {lab.model} fp32 on {threads} CPU threads, LoRA r={lab.lora_rank}, "
          f"batch {batch}, max_length {max_length}, {args.steps} timed steps per mode")  # fmt: skip
    header = (f"{'mode':<9} {'trained tok/s':>14} {'non-pad':>8} {'examples/s':>11} "
              f"{'answer tok':>11} {'step s':>8}")  # fmt: skip
    print(header + "\n" + "-" * len(header))
    for r in results:
        print(f"{r['mode']:<9} {r['trained_tokens_per_s']:>14,.1f} {100 * r['nonpad_fraction']:>7.1f}% "
              f"{r['examples_per_s']:>11.2f} {r['answer_tokens']:>11,} "
              f"{r['step_seconds']:>8.1f}")  # fmt: skip
    print(f"default / naive trained tokens/s: {ratio:.2f}x (target >= 1.5x); "
          f"default non-pad {100 * by_mode['default']['nonpad_fraction']:.1f}% (target >= 95%)")  # fmt: skip
    summary = {
        "model": lab.model,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "max_length": max_length,
        "steps": args.steps,
        "rows": args.rows,
        "results": results,
        "ratio_default_over_naive": ratio,
        "meets_targets": ratio >= 1.5 and by_mode["default"]["nonpad_fraction"] >= 0.95,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
