"""The GPU check: every training lab's trainer, memory plans and time estimates on a GPU, in under 8 minutes.

Made for a lent GPU machine that reaches no registry and takes 64 MiB of files per command: nothing is
downloaded and no checkpoint travels. Models are built from configs with random weights (memory and speed do
not depend on the values): the tiny Llama 3.1 of the family matrix (``tests/family_models.py``: the real
128,256-token tokenizer and chat template, 2 layers) for the labs' trainers, and a Llama-3.1-8B-shaped model
(``bench/gpu_throughput.py``'s config) for memory and throughput at the real width. Run it through
``scripts/gpu_check.sh`` (which installs the carried wheels first)::

    python bench/gpu_check.py --out docs/gpu_run.json        # on a CUDA machine
    python bench/gpu_check.py --dry-run                      # what it would run, anywhere
    python bench/gpu_check.py --device cpu --tiny --out x.json  # the same items, tiny, on a CPU (the tests)

Items, in order: ``environment`` (versions against pyproject.toml's pins, ``envcheck.check_device``),
``bitsandbytes`` (``envcheck.check_bitsandbytes``), ``model_defaults`` (``labhelpers.models``: bf16 and
``device_map={"": 0}`` on a GPU), ``throughput`` (``estimate.device_throughput``), ``memory_lora_8b`` and
``memory_qlora_8b`` (``track_memory``'s CUDA peak vs ``plan_memory``; ``estimate_time`` vs the measured time),
then one item per training lab (03 SFT, 04 NEFTune, 05 QLoRA, 06 DPO, 07 SimPO, 08 ORPO, 09 KTO) built by
``tests/lab_trainers.py`` with the full profile's settings and trained for a few steps. Each item has a time
guard; the JSON summary is rewritten after every item, and the exit status is 1 if any item failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

BUDGET_S = 480  # the limit: 8 minutes on one H200, the wheel install included
RESERVE_S = 20  # left for the shell script's install and summary
PLAN_TOLERANCE = 0.30  # plan_memory within 30 % of track_memory's CUDA peak (not yet calibrated on an H200)
ESTIMATE_BAND = 3.0  # the measured time within [low / 3, high x 3] of estimate_time's range
MIN_GPU_BF16_TFLOPS = 100.0  # any datacenter GPU's dense bf16 matmul (an H200 measures ~790, a Spark's GB10 125)
MIN_CPU_GFLOPS = 1.0
CHECKED_PINS = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes")
SKIP_NO_BNB = "skipped: bitsandbytes not available"


@dataclass(frozen=True)
class Item:
    """One check: its name, what it does, its time guard and (GPU run) a rough expected time."""

    name: str
    what: str
    guard_s: int
    expect_s: int
    run: Callable[[Any], dict[str, Any]]
    needs_bnb: bool = False


class ItemTimeout(Exception):
    """An item ran past its time guard."""


class Skip(Exception):
    """An item that cannot run here: its message says why."""


# ------------------------------------------------------------------------------------------ context
@dataclass
class Context:
    """What the items share: the device, the sizes, the models built once, the settings."""

    device: str
    tiny: bool
    steps: int
    work: Path
    bnb: bool = False
    bnb_detail: str = ""
    small_model: Path | None = None
    throughput: Any = None

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def pins() -> dict[str, str]:
    """The versions pyproject.toml pins (torch as its range)."""
    text = (ROOT / "pyproject.toml").read_text()
    found = dict(re.findall(r'^\s*"([A-Za-z0-9_.-]+)\s*((?:==|>=)[^"]*)",?\s*$', text, re.M))
    return {name: found[name] for name in CHECKED_PINS if name in found}


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


# ------------------------------------------------------------------------------------------ items

def _verdict(out: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """An item's result with its status: pass, or fail with the problems found."""
    out["status"] = "fail" if problems else "pass"
    if problems:
        out["problems"] = problems
    return out

def item_environment(ctx: Context) -> dict[str, Any]:
    """Versions against the pins, the importable training stack, and lab 00's device check."""
    from labhelpers import envcheck

    wanted = pins()
    found = {name: _version(name) for name in (*CHECKED_PINS, "pyarrow", "dill", "multiprocess")}
    off_pin = {n: f"{found[n]} (pinned {v})" for n, v in wanted.items()
               if v.startswith("==") and found[n] != v[2:] and not (n == "bitsandbytes" and found[n] == "missing")}
    broken = {}
    for module in ("trl", "datasets", "peft", "accelerate"):
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - what fails to import is the finding
            broken[module] = f"{type(exc).__name__}: {exc}"
    device = envcheck.check_device()
    ok_device = device.ok and (("compute capability" in device.detail) == ctx.on_gpu)
    status = "pass" if ok_device and not broken else "fail"
    return {"status": status, "device": device.detail, "python": platform.python_version(),
            "versions": found, "pins": wanted, "off_pin": off_pin, "import_errors": broken,
            "note": "off_pin lists versions this machine runs that differ from pyproject.toml's pins"}


def item_bitsandbytes(ctx: Context) -> dict[str, Any]:
    """Lab 00's NF4 round trip; without it lab 05 and the QLoRA memory item are skipped."""
    if not ctx.bnb:
        return {"status": SKIP_NO_BNB, "detail": ctx.bnb_detail}
    from labhelpers import envcheck

    check = envcheck.check_bitsandbytes()
    return {"status": "pass" if check.ok else "fail", "detail": check.detail,
            "bytes_before": check.before, "bytes_after": check.after}


def item_model_defaults(ctx: Context) -> dict[str, Any]:
    """``load_model``'s defaults: bf16 and the whole model on GPU 0 (float32 on the CPU); 4-bit if bnb."""
    import torch

    from labhelpers import models

    model = models.load_model(str(ctx.small_model))
    dtype, where = next(model.parameters()).dtype, str(next(model.parameters()).device)
    device_map = getattr(model, "hf_device_map", None)
    want_dtype = torch.bfloat16 if ctx.on_gpu else torch.float32
    want_where = "cuda:0" if ctx.on_gpu else "cpu"
    problems = []
    if dtype != want_dtype or models.default_dtype() != want_dtype:
        problems.append(f"dtype {dtype}, default_dtype {models.default_dtype()}, expected {want_dtype}")
    if where != want_where:
        problems.append(f"parameters on {where}, expected {want_where}")
    if ctx.on_gpu and device_map not in ({"": 0}, {"": "cuda:0"}):
        problems.append(f"hf_device_map {device_map}, expected {{'': 0}}")
    out: dict[str, Any] = {"dtype": str(dtype), "device": where, "hf_device_map": str(device_map),
                           "attn_implementation": model.config._attn_implementation}
    if model.config._attn_implementation != "sdpa":
        problems.append(f"attention {model.config._attn_implementation}, expected sdpa")
    del model
    if ctx.bnb and ctx.on_gpu:
        q = models.load_model(str(ctx.small_model), quantization="4bit", for_training=True)
        kind = type(q.model.layers[0].self_attn.q_proj).__name__
        out["4bit_q_proj"] = kind
        if kind != "Linear4bit":
            problems.append(f"4-bit load gave {kind}, expected Linear4bit")
        del q
    _free()
    return _verdict(out, problems)


def item_throughput(ctx: Context) -> dict[str, Any]:
    """``schedules.device_throughput``: the peak every time estimate divides by, measured here."""
    from labhelpers.schedules import device_throughput

    thr = device_throughput()
    ctx.throughput = thr
    bound = MIN_GPU_BF16_TFLOPS * 1e12 if ctx.on_gpu else MIN_CPU_GFLOPS * 1e9
    ok = math.isfinite(thr.peak_flops) and thr.peak_flops >= bound
    return {"status": "pass" if ok else "fail", "peak_tflops": round(thr.peak_flops / 1e12, 2),
            "utilisation_assumed": list(thr.utilisation), "source": thr.source, "bound_tflops": bound / 1e12}


def _llama_8b_config(tiny: bool) -> Any:
    from gpu_throughput import LLAMA_31_8B
    from transformers import LlamaConfig

    shape = dict(LLAMA_31_8B)
    if tiny:  # same family and vocabulary, a CPU-sized width and depth
        shape.update(hidden_size=128, intermediate_size=448, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=1)
    config = LlamaConfig(**shape, attn_implementation="sdpa")
    config.use_cache = False
    return config


def _memory_item(ctx: Context, method: str) -> dict[str, Any]:
    """Train the 8B-shaped model (LoRA r16, all linear layers) a few steps; peak vs plan, time vs estimate."""
    import torch
    from gpu_throughput import train_step
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from labhelpers.memory import plan_memory, track_memory
    from labhelpers.schedules import Schedule, estimate_time

    qlora = method == "qlora"
    if qlora and not ctx.on_gpu:
        raise Skip("skipped: the 8B-shaped QLoRA item quantizes on CUDA only")
    config = _llama_8b_config(ctx.tiny)
    batch, seq, rank, steps, warmup = (2, 128, 16, 2, 1) if ctx.tiny else (4, 1024, 16, 5, 1)
    gc_on = qlora  # as the labs and gpu_throughput.py: checkpointing for QLoRA, not for LoRA
    dev = "cuda" if ctx.on_gpu else "cpu"
    _free()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16 if ctx.on_gpu else torch.float32)
    try:
        with torch.device(dev):
            from transformers import LlamaForCausalLM

            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    if qlora:
        from gpu_throughput import quantize_linears_4bit

        quantize_linears_4bit(model)
        model.is_loaded_in_4bit = True
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    build_s = time.perf_counter() - t0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=ctx.on_gpu)
    model.train()
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=dev)

    def step() -> float:
        return train_step(model, ids, opt)

    with track_memory(f"{method} 8B-shaped", device=dev, verbose=False) as tracked:
        for _ in range(warmup):
            step()
        if ctx.on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        if ctx.on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    n_layers = config.num_hidden_layers
    model = opt = None  # freed before the plan is computed (the closure above holds the names)
    _free()
    # a bf16 model without autocast (as this loop runs it); plan.total - overhead: torch's counter omits the context
    plan = plan_memory(config, method=method, batch=batch, seq_len=seq, rank=rank, gradient_checkpointing=gc_on,
                       optimizer="adamw", dtype="bf16" if ctx.on_gpu else "fp32", autocast=False, device=dev)
    planned = plan.total - plan.overhead
    error = (planned - tracked.peak) / tracked.peak
    sched = Schedule(kind="sft", examples=batch * steps, tokens=batch * seq * steps, rows_per_epoch=batch * steps,
                     per_step=batch, steps=steps, epochs=1.0, max_length=seq, stated_epochs=None)
    thr = ctx.throughput  # the peak measured once (item throughput); 4-bit gets its own utilisation range
    if thr is not None and ctx.on_gpu:
        from dataclasses import replace

        from labhelpers.schedules import UTILISATION

        thr = replace(thr, utilisation=UTILISATION["gpu-4bit" if qlora else "gpu"])
    est = estimate_time(sched, config, "sft", gradient_checkpointing=gc_on, quantized=qlora, throughput=thr,
                        verbose=False)
    in_band = est.low_s / ESTIMATE_BAND <= seconds <= est.high_s * ESTIMATE_BAND
    problems = []
    if not math.isfinite(loss):
        problems.append(f"loss {loss}")
    if ctx.on_gpu and abs(error) > PLAN_TOLERANCE:
        problems.append(f"plan {planned / 1e9:.2f} GB vs peak {tracked.peak / 1e9:.2f} GB: "
                        f"{100 * error:+.0f} % (tolerance {100 * PLAN_TOLERANCE:.0f} %)")
    if ctx.on_gpu and not in_band:
        problems.append(f"{est.versus(seconds)} (band x{ESTIMATE_BAND:g})")
    tokens = batch * seq * steps
    out = {"status": "fail" if problems else "pass", "layers": n_layers, "hidden": config.hidden_size,
           "batch": batch, "seq": seq, "rank": rank, "gradient_checkpointing": gc_on, "steps": steps,
           "final_loss": round(loss, 3), "build_s": round(build_s, 1), "step_s": round(seconds / steps, 3),
           "tokens_per_s": round(tokens / seconds), "peak_gb": round(tracked.peak / 1e9, 2),
           "peak_method": tracked.method, "plan_gb": round(planned / 1e9, 2), "plan_error_pct": round(100 * error, 1),
           "measured_s": round(seconds, 2), "estimate_s": [round(est.low_s, 2), round(est.high_s, 2)],
           "estimate": est.versus(seconds)}
    if not ctx.on_gpu:
        out["note"] = ("CPU: peak is the RSS at entry + malloc's growth; plan and estimate are reported, "
                       "judged on CUDA only")
    if problems:
        out["problems"] = problems
    return out


def item_memory_lora(ctx: Context) -> dict[str, Any]:
    return _memory_item(ctx, "lora")


def item_memory_qlora(ctx: Context) -> dict[str, Any]:
    return _memory_item(ctx, "qlora")


def _lab_item(lab: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        """Build the lab's trainer as the lab does (tests/lab_trainers.py), train ``ctx.steps`` steps."""
        import lab_trainers

        import labhelpers as lh
        from labhelpers import training
        from labhelpers.memory import plan_memory

        prof = lh.profile(verbose=False)
        out_dir = ctx.work / lab
        made = lab_trainers.BUILDERS[lab](prof, out_dir, ctx.steps)
        summary = training.train(made.trainer, resume=False, label=f"{lab}: {ctx.steps} steps")
        bf16 = bool(made.short.bf16)
        problems = []
        if summary.steps != ctx.steps:
            problems.append(f"trained {summary.steps} steps, expected {ctx.steps}")
        if summary.final_loss is None or not math.isfinite(summary.final_loss) or summary.stopped_by_nan:
            problems.append(f"final loss {summary.final_loss}, stopped by the NaN guard: {summary.stopped_by_nan}")
        if bf16 != ctx.on_gpu:
            problems.append(f"bf16={bf16} on {ctx.device}: the presets turn bf16 on exactly when CUDA is there")
        result = {"profile": prof.name, "model": str(ctx.small_model.name), "lab_steps": made.args.max_steps,
                  "steps": summary.steps, "final_loss": summary.final_loss, "wall_s": round(summary.wall_time_s, 2),
                  "tokens_per_s": round(summary.tokens_per_s), "trained_tokens": summary.trained_tokens,
                  "peak_gb": round(summary.peak_memory_gb, 3), "bf16": bf16,
                  "optim": str(getattr(made.short.optim, "value", made.short.optim))}
        if lab == "03_lora_sft":  # the lab's own plan next to the trainer's peak (the tiny model: logits dominate)
            plan = plan_memory(str(ctx.small_model), method="lora", batch=prof.sft_forward_rows,
                               seq_len=prof.max_length, rank=prof.lora_rank, dtype="bf16" if ctx.on_gpu else "fp32",
                               device=ctx.device)  # fmt: skip
            result["plan_gb"] = round((plan.total - plan.overhead) / 1e9, 3)
        del made
        _free()
        return _verdict(result, problems)

    return run


LAB_ITEMS = (("03_lora_sft", "lab 03 LoRA SFT, packed", 60, 15), ("04_neftune", "lab 04 NEFTune SFT, unpacked", 60, 15),
             ("05_qlora", "lab 05 QLoRA: 4-bit, checkpointing, paged_adamw_8bit", 90, 20),
             ("06_dpo", "lab 06 DPOTrainer", 60, 15), ("07_simpo", "lab 07 SimPO (CPOTrainer)", 60, 15),
             ("08_orpo", "lab 08 ORPOTrainer", 60, 15), ("09_kto", "lab 09 KTOTrainer", 90, 20),
             ("12_grpo", "lab 12 GRPOTrainer: generation + updates", 90, 20))
ITEMS: tuple[Item, ...] = (
    Item("environment", "versions vs pyproject.toml pins; trl/datasets import; envcheck.check_device", 60, 10,
         item_environment),
    Item("bitsandbytes", "envcheck.check_bitsandbytes: NF4 round trip", 30, 5, item_bitsandbytes, needs_bnb=True),
    Item("model_defaults", "labhelpers.models: bf16, device_map {'': 0}, sdpa; a 4-bit load", 60, 10,
         item_model_defaults),
    Item("throughput", "estimate.device_throughput: bf16 matmul peak", 30, 5, item_throughput),
    Item("memory_lora_8b", "Llama-3.1-8B-shaped LoRA: track_memory peak vs plan_memory, estimate_time vs measured",
         120, 40, item_memory_lora),
    Item("memory_qlora_8b", "the same in 4-bit with gradient checkpointing (QLoRA)", 150, 70, item_memory_qlora,
         needs_bnb=True),
    *(Item(f"lab{name}", what, guard, expect, _lab_item(name), needs_bnb=name == "05_qlora")
      for name, what, guard, expect in LAB_ITEMS),
)


# ------------------------------------------------------------------------------------------ running
def _alarm(signum: int, frame: Any) -> None:
    raise ItemTimeout


def run_item(item: Item, ctx: Context, guard_s: int) -> dict[str, Any]:
    """One item under its time guard; any exception is the item's failure, reported, never the run's end."""
    if item.needs_bnb and not ctx.bnb:
        return {"status": SKIP_NO_BNB, "detail": ctx.bnb_detail}
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, guard_s))
    try:
        result = item.run(ctx)
    except ItemTimeout:
        result = {"status": "fail", "error": f"timed out after its {guard_s} s guard"}
    except Skip as why:
        result = {"status": str(why)}
    except Exception as exc:  # noqa: BLE001 - the item's failure is the finding; the next item still runs
        result = {"status": "fail", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)[-3000:]}
    finally:
        signal.alarm(0)
    try:
        _free()
    except Exception:  # noqa: BLE001 - a broken CUDA context shows in the next item
        pass
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _setup(ctx: Context) -> None:
    """The shared small model (tiny Llama 3.1), the environment the labs read, bitsandbytes' presence."""
    from family_models import build_family

    import labhelpers  # noqa: F401 - before bitsandbytes: its filters of known library messages (messages.py)

    ctx.small_model = build_family("llama3.1", ctx.work / "llama3.1-tiny")
    os.environ["LABS_PROFILE"] = "smoke" if ctx.tiny else "full"
    os.environ["LABS_MODEL"] = str(ctx.small_model)
    os.environ["LABS_OUTPUT_DIR"] = str(ctx.work / "outputs")
    os.environ.pop("LABS_SEED", None)
    try:
        import bitsandbytes  # noqa: F401

        ctx.bnb, ctx.bnb_detail = True, f"bitsandbytes {_version('bitsandbytes')}"
    except Exception as exc:  # noqa: BLE001 - absent or broken: the 4-bit items say so
        ctx.bnb, ctx.bnb_detail = False, f"import bitsandbytes: {type(exc).__name__}: {exc}"


def tree_bytes() -> int | None:
    """What the device tool sends: tracked and untracked-not-ignored files (None outside a git checkout)."""
    import subprocess

    try:
        names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def dry_run(wheels: Path | None, tiny: bool, device: str) -> int:
    """Print the items, their guards and rough times, the wheels and the sizes; run nothing."""
    total = sum(i.expect_s for i in ITEMS)
    print(f"gpu_check.py --dry-run: {len(ITEMS)} items on {device}{' (tiny)' if tiny else ''}, "
          f"about {total} s expected on an H200, budget {BUDGET_S} s (guard per item in brackets):")
    for i, item in enumerate(ITEMS, 1):
        extra = f"; {SKIP_NO_BNB} when absent" if item.needs_bnb else ""
        print(f"  {i:2}. {item.name:<16} [{item.guard_s:>3} s] {item.what}{extra}")
    tree = tree_bytes()
    found = sorted(wheels.glob("*.whl")) if wheels and wheels.is_dir() else []
    size = sum(w.stat().st_size for w in found)
    if found:
        print(f"wheels in {wheels}: " + ", ".join(f"{w.name.split('-')[0]} {w.stat().st_size / 2**20:.1f} MiB"
                                                   for w in found))
    else:
        print(f"wheels: none in {wheels or '.whl'} yet (bash scripts/gpu_wheels.sh downloads them: trl, datasets, "
              "dill, multiprocess, transformers, peft, bitsandbytes)")
    if tree is None:
        print(f"sizes: wheels {size / 2**20:.1f} MiB; tree unknown (not a git checkout) of the 64 MiB one command may "
              "carry")
    else:
        print(f"sizes: tree {tree / 2**20:.1f} MiB + wheels {size / 2**20:.1f} MiB = {(tree + size) / 2**20:.1f} MiB "
              "of the 64 MiB one command may carry")
    print("writes: the JSON summary (--out), rewritten after every item; exit 1 if any item failed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu_run.json")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized models and the smoke profile (the tests)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per lab (default 3; tiny 2)")
    parser.add_argument("--only", nargs="+", choices=[i.name for i in ITEMS], help="run these items alone")
    parser.add_argument("--budget", type=int, default=BUDGET_S - RESERVE_S, help="seconds for all items")
    parser.add_argument("--wheels", type=Path, help="the carried wheels' folder (listed by --dry-run)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run(args.wheels, args.tiny, args.device)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: the CPU run sees no GPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU visible; use --device cpu --tiny to run the items on a CPU, or --dry-run.",
              file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ctx = Context(device=args.device, tiny=args.tiny, steps=args.steps or (2 if args.tiny else 3), work=work)
    _setup(ctx)
    summary: dict[str, Any] = {
        "what": "bench/gpu_check.py (scripts/gpu_check.sh): the training labs' trainers, memory plans and time "
                "estimates on random-weight models built from configs",
        "device": torch.cuda.get_device_name(0) if ctx.on_gpu else f"CPU ({platform.machine()})",
        "torch": torch.__version__, "tiny": args.tiny, "steps_per_lab": ctx.steps, "budget_s": args.budget,
        "small_model": "tiny Llama 3.1 (tests/family_models.py: real tokenizer, 2 layers, width 64)",
        "bitsandbytes": ctx.bnb_detail, "items": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    selected = [i for i in ITEMS if not args.only or i.name in args.only]
    if any(i.name.startswith("memory_") for i in selected) and not any(i.name == "throughput" for i in selected):
        selected.insert(0, next(i for i in ITEMS if i.name == "throughput"))  # the estimates divide by its peak
    for item in selected:
        left = args.budget - (time.perf_counter() - t_start)
        if left < min(item.guard_s, 15):
            result = {"status": "fail", "error": f"not run: {left:.0f} s of the {args.budget} s budget left"}
        else:
            print(f"gpu_check: {item.name} ({item.what}) ...", flush=True)
            result = run_item(item, ctx, int(min(item.guard_s, left)))
        summary["items"][item.name] = result
        extra = result.get("error") or "; ".join(result.get("problems", []))
        print(f"gpu_check: {item.name}: {result['status']} ({result.get('seconds', 0)} s)"
              f"{' - ' + extra if extra else ''}", flush=True)
        summary["total_s"] = round(time.perf_counter() - t_start, 1)
        args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    failed = [n for n, r in summary["items"].items() if r["status"] == "fail"]
    skipped = [n for n, r in summary["items"].items() if r["status"].startswith("skipped")]
    summary.update(failed=failed, skipped=skipped, passed=not failed)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"gpu_check: {len(summary['items']) - len(failed) - len(skipped)} passed, {len(skipped)} skipped, "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; {summary['total_s']} s -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
