"""LoRA and QLoRA training throughput, MFU and peak memory vs plan on a Llama-3.1-8B-shaped model.

For a lent GPU machine (no network there): the model is built from the Llama 3.1 8B config with
random weights, since throughput and memory do not depend on the weight values. One command:

    python bench/gpu_throughput.py --json gpu.json           # LoRA bf16, then QLoRA 4-bit
    python bench/gpu_throughput.py --methods lora --steps 5  # quicker

Per method it reports trained tokens/s, model FLOP utilisation (MFU) and peak GPU memory next to
``labhelpers.memory.plan_memory`` for the same settings. FLOPs per token follow the usual convention
(6 x parameters + 12 x layers x hidden x sequence for attention) for a full fine-tune; a LoRA step
with a frozen base skips the weight gradients, so its work is ~4/6 of that (8/6 with activation
recomputation). Both are printed: ``mfu_6n`` is the comparable-across-methods figure, ``hfu`` the
work actually done. The peak is the bf16 matmul rate measured in the same run (8192^3 products).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA_31_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
)  # public config.json of meta-llama/Llama-3.1-8B-Instruct



def train_step(model: Any, ids: Any, opt: Any) -> float:
    """One causal-LM training step on ``ids`` (labels = inputs): forward, backward, optimizer step; the loss."""
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()

def matmul_peak(n: int = 8192, reps: int = 10) -> float:
    """Measured dense bf16 matmul FLOP/s on this GPU: the ceiling MFU is quoted against."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def quantize_linears_4bit(model: torch.nn.Module) -> None:
    """Swap every decoder nn.Linear for a bitsandbytes NF4 Linear4bit (double quant, bf16 compute)."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and "lm_head" not in f"{name}.{child_name}":
                q = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data.to("cpu"), requires_grad=False, compress_statistics=True, quant_type="nf4"
                )
                setattr(module, child_name, q.to("cuda"))
                del child
    torch.cuda.empty_cache()


def build(method: str, rank: int, gradient_checkpointing: bool):
    """The 8B-shaped model on the GPU, LoRA attached to all linear layers."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA_31_8B, attn_implementation="sdpa")
    config.use_cache = False
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build directly in bf16: no 32 GB fp32 detour
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    if method == "qlora":
        quantize_linears_4bit(model)
        model.is_loaded_in_4bit = True
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora), config


def run(method: str, args: argparse.Namespace, peak_flops: float) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gc_on = args.gradient_checkpointing if args.gradient_checkpointing is not None else method == "qlora"
    t0 = time.perf_counter()
    model, config = build(method, args.rank, gc_on)
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    model.train()
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        return train_step(model, ids, opt)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = args.batch * args.seq * args.steps
    n_params = 8_030_261_248  # Llama 3.1 8B parameter count (embeddings and lm_head included)
    attn = 12 * config.num_hidden_layers * config.hidden_size * args.seq
    flops_6n = (6 * n_params + attn) * tokens
    work = (8 if gc_on else 4) / 6 * flops_6n
    row = {
        "method": method, "batch": args.batch, "seq": args.seq, "rank": args.rank,
        "gradient_checkpointing": gc_on, "steps": args.steps, "final_loss": round(loss, 3),
        "build_s": round(build_s, 1), "step_s": round(seconds / args.steps, 3),
        "tokens_per_s": round(tokens / seconds), "mfu_6n": round(flops_6n / seconds / peak_flops, 3),
        "hfu": round(work / seconds / peak_flops, 3),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
    }
    try:
        from labhelpers.memory import plan_memory

        # This loop runs a bf16 model without autocast; torch's counter does not see the CUDA context.
        plan = plan_memory("llama-3.1-8b", method=method, batch=args.batch, seq_len=args.seq, rank=args.rank,
                           gradient_checkpointing=gc_on, optimizer="adamw", dtype="bf16", autocast=False)
        row["plan_gb"] = round((plan.total - plan.overhead) / 1e9, 2)
        row["plan_error_pct"] = round(100 * (plan.total / 1e9 - row["peak_gb"]) / row["peak_gb"], 1)
    except Exception as exc:  # noqa: BLE001 - the benchmark still reports what it measured
        row["plan_gb"] = f"n/a ({type(exc).__name__}: {exc})"
    return row  # model and optimizer are freed on return; the next run starts with empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"], choices=["lora", "qlora"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                        help="default: off for LoRA, on for QLoRA (as the labs do)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA GPU: this benchmark is for a GPU machine (see bench/README.md).")
        return 2
    peak = matmul_peak()
    print(f"GPU: {torch.cuda.get_device_name(0)}; measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; "
          f"torch {torch.__version__}")
    rows = []
    for method in args.methods:
        row = run(method, args, peak)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'method':<7}{'tok/s':>9}{'MFU(6N)':>9}{'HFU':>7}{'peak GB':>9}{'plan GB':>9}{'plan err':>10}")
    for r in rows:
        plan = r["plan_gb"] if isinstance(r["plan_gb"], float) else float("nan")
        print(f"{r['method']:<7}{r['tokens_per_s']:>9}{r['mfu_6n']:>9.1%}{r['hfu']:>7.1%}{r['peak_gb']:>9.1f}"
              f"{plan:>9.1f}{r.get('plan_error_pct', float('nan')):>9.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"gpu": torch.cuda.get_device_name(0), "peak_flops": peak,
                                         "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
