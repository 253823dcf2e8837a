"""Planned vs measured peak memory of LoRA and QLoRA training on the embedded SmolLM2-135M model.

Run by hand (not part of the tests); about 3 minutes on 2 idle CPU cores (QLoRA is the slower half:
bitsandbytes' CPU kernels), well under a minute on a GPU:

    python bench/memory_plan.py                         # LoRA and QLoRA, batch 4 x seq 256, 3 steps, CPU
    python bench/memory_plan.py --steps 2 --batch 2 --seq 512 --json memory.json
    python bench/memory_plan.py --device cuda           # on a GPU: bf16 weights, autocast (as the labs train)
    python bench/memory_plan.py --model path/to/folder  # another Llama-style model (weights' values don't matter)

Each method runs in its own fresh Python process so one run's memory cannot inflate the next. The
worker loads the model with ``labhelpers.models.load_model`` (``quantization="4bit"`` for QLoRA: NF4,
double quantisation, bf16 compute, ``prepare_model_for_kbit_training``), attaches LoRA (r=16 by default,
all-linear, no dropout), and runs a few AdamW steps on random token ids (memory does not depend on
the token values) inside ``track_memory``. It compares with ``plan_memory`` for the same settings.

What "measured" means:
- CPU: the peak resident set size of the process during the training steps (kernel high-water mark,
  reset after loading) minus the RSS just before the model was loaded (libraries imported, batch
  built). It therefore contains the weights, the adapter, gradients, optimizer states, activations,
  logits and whatever the allocator keeps; it excludes the Python/torch runtime. The plan's
  ``overhead`` (CUDA context) is 0 on CPU. The worker sets glibc's ``MALLOC_MMAP_THRESHOLD_`` and
  ``MALLOC_TRIM_THRESHOLD_`` to 1 MiB so that freed tensors go back to the OS at once and the RSS peak
  counts live memory, as ``max_memory_allocated`` does on a GPU; with glibc's defaults (``--glibc-default``)
  the RSS also holds freed blocks glibc keeps for reuse, which depends on the allocation order, not on
  the model.
- CUDA: ``torch.cuda.max_memory_allocated`` during the steps minus the allocation before loading
  (normally 0). The CUDA context is invisible to that counter, so it is compared with
  ``plan.total - plan.overhead``; the context itself is reported as ``cuda_context_gb``.

The worker also counts the bytes autograd saves per token in one decoder layer with
``torch.autograd.graph.saved_tensors_hooks`` and prints it next to the plan's per-layer figure: the
check that the activation formula is a count of real tensors, not a fitted constant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(args: argparse.Namespace) -> dict:
    """One method in this process: load, attach LoRA, train a few steps, measure, plan."""
    import contextlib
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import torch
    from peft import LoraConfig, get_peft_model

    from labhelpers.memory import GB, _rss, plan_memory, saved_activation_bytes, track_memory
    from labhelpers.models import load_model
    from labhelpers.profiles import embedded_model_dir

    cuda = args.device == "cuda"
    from labhelpers.arch import arch_spec

    path = str(embedded_model_dir()) if args.model == "embedded" else args.model
    torch.manual_seed(0)
    ids = torch.randint(0, arch_spec(path).vocab, (args.batch, args.seq), device=args.device)
    dtype = torch.bfloat16 if cuda else torch.float32
    base = torch.cuda.memory_allocated() if cuda else _rss()

    t0 = time.perf_counter()
    model = load_model(path, quantization="4bit" if args.method == "qlora" else None, dtype=dtype,
                       for_training=True, gradient_checkpointing=args.gc)
    if args.gc and args.method != "qlora":
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    if args.method == "qlora":  # as TRL 1.16's SFTTrainer does with a quantized model: a bf16 adapter
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    load_s = time.perf_counter() - t0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    after_load = (torch.cuda.memory_allocated() if cuda else _rss()) - base

    t0 = time.perf_counter()
    with track_memory(f"{args.method} training", device=args.device, verbose=False) as tracked:
        for _ in range(args.steps):
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    measured = tracked.peak - base
    final_loss = float(loss)
    del loss
    # after the measurement: count what one layer saves for backward (a forward without backward)
    with autocast:  # bytes autograd keeps for backward in one decoder layer, per token (parameters excluded)
        saved = saved_activation_bytes(model, ids, [model.base_model.model.model.layers[1]]) / ids.numel()

    plan = plan_memory(path, method=args.method, batch=args.batch, seq_len=args.seq, rank=args.rank,
                       gradient_checkpointing=args.gc, optimizer="adamw", dtype="bf16" if cuda else "fp32",
                       device=args.device)
    planned = plan.total - plan.overhead
    row = {
        "model": plan.model if args.model != "embedded" else "SmolLM2-135M",
        "method": args.method, "device": args.device, "dtype": plan.dtype, "batch": args.batch, "seq": args.seq,
        "rank": args.rank, "gradient_checkpointing": args.gc, "steps": args.steps,
        "final_loss": round(final_loss, 3),
        "plan_gb": round(planned / GB, 3), "measured_gb": round(measured / GB, 3),
        "error_pct": round(100 * (planned - measured) / measured, 1),
        "after_load_gb": round(after_load / GB, 3),
        "plan_weights_lora_gb": round((plan.weights + plan.lora) / GB, 3),
        "saved_per_token_layer": round(saved), "plan_per_token_layer": round(
            plan.details["activation_bytes_per_token_per_layer"]),
        "plan": {k: round(v / GB, 4) for k, v in plan.breakdown().items()},
        "measure": tracked.method, "load_s": round(load_s, 1), "train_s": round(train_s, 1),
    }
    if cuda:
        free, total = torch.cuda.mem_get_info()
        row["cuda_context_gb"] = round((total - free - torch.cuda.memory_reserved()) / GB, 3)
        row["reserved_peak_gb"] = round(torch.cuda.max_memory_reserved() / GB, 3)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"], choices=["lora", "qlora"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--gc", action="store_true", help="gradient checkpointing")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="embedded", help="a Llama-style model folder (default: embedded)")
    parser.add_argument("--glibc-default", action="store_true", help="CPU: keep glibc's caching of freed memory")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", choices=["lora", "qlora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        args.method = args.worker
        print("ROW " + json.dumps(worker(args)), flush=True)
        return 0

    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--worker", method, "--steps", str(args.steps), "--batch",
               str(args.batch), "--seq", str(args.seq), "--rank", str(args.rank), "--device", args.device,
               "--model", args.model]
        cmd += ["--gc"] if args.gc else []
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # load_model would otherwise place the model on a GPU
        if args.device == "cpu" and not args.glibc_default:
            env.update(MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="1048576")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
        if proc.returncode or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{method} worker failed (exit {proc.returncode})")
        rows.append(json.loads(lines[-1][4:]))

    head = f"{'method':<7}{'dtype':<6}{'plan GB':>9}{'measured GB':>13}{'error':>8}   {'saved/token/layer':>18} (plan)"
    print(f"{rows[0]['model']}, batch {args.batch} x seq {args.seq}, r={args.rank}, {args.steps} AdamW steps, "
          f"{args.device}{', gradient checkpointing' if args.gc else ''}"
          f"{', glibc default caching' if args.glibc_default and args.device == 'cpu' else ''}")
    print(head)
    for r in rows:
        print(f"{r['method']:<7}{r['dtype']:<6}{r['plan_gb']:>9.3f}{r['measured_gb']:>13.3f}{r['error_pct']:>7.1f}%"
              f"   {r['saved_per_token_layer']:>18,} ({r['plan_per_token_layer']:,})")
    for r in rows:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in r["plan"].items() if v)
        print(f"  {r['method']} plan: {parts} | after load {r['after_load_gb']:.3f} GB "
              f"(plan weights+adapter {r['plan_weights_lora_gb']:.3f}) | {r['measure']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
