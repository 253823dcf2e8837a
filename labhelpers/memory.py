"""Memory: see it (``memory_report``), measure it (``track_memory``), predict it before loading anything
(``plan_memory``), refuse a run that cannot fit (``preflight``) and draw the plan (``plot_memory``).

On a DGX Spark the GPU and CPU share one 128 GB pool, so the system line of the report is the one that
matters; "GB" here is always 10**9 bytes.

The plan is computed from the model's config alone (``labhelpers.model_configs``), in bytes:

- weights: every parameter at 2 (bf16) or 4 (fp32) bytes. QLoRA: decoder projections in NF4 with double
  quantisation = 0.5 + 1/64 (8-bit absmax per 64 weights) + 4/(64*256) (fp32 absmax per 256 absmax) bytes
  per weight; embeddings, norms and lm_head are not quantised (transformers skips the output embedding,
  bitsandbytes only replaces nn.Linear) and stay in ``dtype``, or fp32 after
  ``peft.prepare_model_for_kbit_training`` (``kbit_upcast=True``: what ``load_model(..., quantization="4bit",
  for_training=True)`` runs).
- lora: r * (in + out) per adapted projection per layer, fp32 (peft upcasts adapters by default).
- gradients: one per trainable parameter, in its dtype. optimizer: AdamW 2 states in the parameter dtype;
  8-bit AdamW 2 bytes + 2 fp32 absmax per 256; SGD (no momentum) none.
- activations: what autograd keeps for backward, per token per layer, counted tensor by tensor for a
  Llama layer with SDPA attention (no seq^2 scores): 2 RMSNorm inputs upcast to fp32 (4h+4 each);
  q, k, v and the attention output (2a+2kv elements, a = heads*head_dim, kv = kv_heads*head_dim) and
  the softmax log-sum-exp (4 bytes per head); gate, up and SiLU outputs (3I elements); the inputs of the
  adapted projections (shared in fp32 training, one bf16 copy per projection under autocast, one fp32 copy
  per projection when peft casts a bf16 input to its fp32 adapter; plus dropout masks); r per adapter
  (lora_A output). Phi-3's fused ``qkv_proj`` keeps its whole output alive (v is a slice of it) and copies
  the attention output for ``o_proj``: 2a+kv more elements. Gradient checkpointing keeps only each layer's input (h elements) and recomputes one
  layer at a time during backward. Verified against ``torch.autograd.graph.saved_tensors_hooks``.
- logits: the loss upcasts logits to fp32; at the start of backward the saved log-softmax, its gradient
  and the logits gradient coexist: 12 bytes * vocab per token.
- workspace: bf16 copies autocast keeps of fp32 weights (adapters; lm_head after kbit upcast) and, for
  QLoRA, the largest projection de-quantised to bf16 during a matmul.
- overhead: the CUDA context and cuBLAS workspaces that torch's counters do not see (0 for device="cpu").

The total is a sum, so it slightly over-states a peak where two transients cannot coexist (with
gradient checkpointing: the logits and the recomputed layer). ``bench/memory_plan.py`` compares it with
measured peaks; the CUDA allocator's cache (reserved minus allocated, typically 5-10 %) is not in the
plan, which is why ``preflight`` keeps 10 % headroom.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .model_configs import ArchSpec, arch_spec

GB = 1e9
METHODS = ("full", "lora", "qlora")
OPTIMIZERS = {"adamw": None, "adamw_8bit": 2 + 8 / 256, "paged_adamw_8bit": 2 + 8 / 256, "sgd": 0.0}
DTYPES = {"bf16": 2, "fp32": 4}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
CUDA_CONTEXT_BYTES = int(0.8 * GB)  # torch 2.11 + CUDA 13 context and cuBLAS handles, measured on an H200
LOGIT_BYTES_PER_VOCAB = 12  # fp32 log-softmax output + its grad + the logits grad at backward start
DROP_CACHES = "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"


class PreflightError(MemoryError):
    """The planned run does not fit the free memory; raised before any weights are loaded."""


# --------------------------------------------------------------------------------------------- report
def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty off Linux)."""
    try:
        text = open("/proc/meminfo", encoding="ascii").read()
    except OSError:
        return {}
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


def is_integrated_gpu() -> bool:
    """True when GPU 0 shares the system memory (a Spark's GB10): ``is_integrated`` in its device properties.

    On such a GPU ``torch.cuda.mem_get_info()`` reports the kernel's MemFree, which counts the page cache as
    used (unsloth issue 10704: writing a 60 GB file took CUDA free memory from 103 to 41 GiB while
    MemAvailable stayed near 116 GiB), so the free memory to plan against is MemAvailable.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    return bool(getattr(torch.cuda.get_device_properties(0), "is_integrated", False))


def _available(info: dict[str, int]) -> int:
    """MemAvailable (free + what the kernel can reclaim, page cache included); psutil off Linux."""
    if info.get("MemAvailable"):
        return info["MemAvailable"]
    import psutil

    return psutil.virtual_memory().available


PAGE_CACHE_NOTE = ("page cache {cache}: files read recently (a downloaded checkpoint) that the kernel frees on "
                   "demand; 'available' counts it as free")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _gb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / GB:.2f} GB"


@dataclass
class MemoryReport:
    """A snapshot of GPU, system (unified on a Spark) and process memory, in bytes."""

    device: str
    gpu_total: int | None
    gpu_used: int | None
    gpu_free: int | None
    torch_allocated: int | None
    torch_peak: int | None
    system_total: int
    system_used: int
    system_available: int
    page_cache: int
    process_rss: int
    unified: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        sys_line = (f"{'unified' if self.unified else 'system'} {_gb(self.system_used)} used / "
                    f"{_gb(self.system_total)} ({_gb(self.system_available)} available)")
        parts = [self.device, sys_line, f"process RSS {_gb(self.process_rss)}"]
        if self.gpu_total is not None and not self.unified:
            parts[1:1] = [f"GPU {_gb(self.gpu_used)} used / {_gb(self.gpu_total)} ({_gb(self.gpu_free)} free)"]
        if self.gpu_total is not None:
            parts.append(f"torch peak {_gb(self.torch_peak)}")
        line = " | ".join(parts)
        if self.unified:  # one pool: the GPU's free memory is the system's available memory
            line += "\n  " + PAGE_CACHE_NOTE.format(cache=_gb(self.page_cache))
        return line


def memory_report() -> MemoryReport:
    """Device name, GPU and system memory, this process's RSS and torch's peak; GPU fields None on CPU.

    On an integrated GPU (``is_integrated_gpu``) the GPU's free memory is MemAvailable, the same number
    ``preflight`` plans against, not CUDA's MemFree, which counts the page cache as used.
    """
    import torch

    info = _meminfo()
    if info:
        sys_total, sys_avail = info["MemTotal"], _available(info)
        cache = info.get("Cached", 0) + info.get("Buffers", 0)
    else:
        import psutil

        vm = psutil.virtual_memory()
        sys_total, sys_avail, cache = vm.total, vm.available, 0
    gpu = dict(gpu_total=None, gpu_used=None, gpu_free=None, torch_allocated=None, torch_peak=None)
    device, unified = f"CPU only ({platform.machine()}, {os.cpu_count()} cores)", False
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        device = torch.cuda.get_device_name(0)
        unified = is_integrated_gpu()
        if unified:
            free = min(sys_avail, total)
        gpu = dict(gpu_total=total, gpu_used=total - free, gpu_free=free,
                   torch_allocated=torch.cuda.memory_allocated(), torch_peak=torch.cuda.max_memory_allocated())
    return MemoryReport(device=device, **gpu, system_total=sys_total, system_used=sys_total - sys_avail,
                        system_available=sys_avail, page_cache=cache, process_rss=_rss(), unified=unified)


# --------------------------------------------------------------------------------------------- track
def _read_hwm() -> int | None:
    try:
        text = open("/proc/self/status", encoding="ascii").read()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryTracker:
    """What ``track_memory`` measured, in bytes: before, peak and delta (= peak - before)."""

    label: str
    device: str
    before: int = 0
    peak: int = 0
    after: int = 0
    device_total: int = 0
    method: str = ""

    @property
    def delta(self) -> int:
        return self.peak - self.before

    @property
    def percent(self) -> float:
        return 100.0 * self.peak / self.device_total if self.device_total else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "delta": self.delta, "percent": self.percent}

    def __str__(self) -> str:
        return (f"[{self.label}] memory before: {self.before / GB:.2f} GB, peak: {self.peak / GB:.2f} GB, "
                f"delta: {self.delta / GB:.2f} GB, {self.percent:.1f} % of device "
                f"({self.device_total / GB:.1f} GB, {self.method})")


@contextlib.contextmanager
def track_memory(label: str = "training", device: str | None = None, verbose: bool = True,
                 interval: float = 0.02) -> Iterator[MemoryTracker]:
    """Measure the peak memory of a block; prints Unsloth-style bookends (before, peak, delta, % of device).

    CUDA: torch's ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the process RSS peak,
    from the kernel's high-water mark reset at entry (``/proc/self/clear_refs``) and a background sampler
    every ``interval`` s (``ru_maxrss`` cannot be reset, so it cannot measure one block).
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tracker = MemoryTracker(label=label, device=device)
    stop = threading.Event()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        tracker.before = torch.cuda.memory_allocated()
        tracker.device_total = torch.cuda.mem_get_info()[1]
        tracker.method = "torch.cuda.max_memory_allocated"
        sampler = None
    else:
        tracker.before = _rss()
        tracker.device_total = _meminfo().get("MemTotal", 0)
        hwm = _reset_hwm()
        tracker.method = "process RSS (kernel high-water mark + sampler)" if hwm else "process RSS (sampler)"
        samples = [tracker.before]

        def sample() -> None:
            while not stop.wait(interval):
                samples.append(_rss())

        sampler = threading.Thread(target=sample, name="track_memory", daemon=True)
        sampler.start()
    try:
        yield tracker
    finally:
        if sampler is None:
            torch.cuda.synchronize()
            tracker.peak = torch.cuda.max_memory_allocated()
            tracker.after = torch.cuda.memory_allocated()
        else:
            stop.set()
            sampler.join()
            tracker.after = _rss()
            peaks = samples + [tracker.after] + ([_read_hwm() or 0] if hwm else [])
            tracker.peak = max(peaks)
        if verbose:
            print(tracker)


# --------------------------------------------------------------------------------------------- plan
@dataclass
class MemoryPlan:
    """Predicted peak memory of a training run, by component, in bytes (``total``, ``table()``, ``as_dict()``)."""

    model: str
    method: str
    dtype: str
    batch: int
    seq_len: int
    rank: int
    gradient_checkpointing: bool
    optimizer: str
    n_params: int
    trainable_params: int
    weights: int
    lora: int
    gradients: int
    optimizer_states: int
    activations: int
    logits: int
    workspace: int
    overhead: int
    details: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict, repr=False)

    COMPONENTS = ("weights", "lora", "gradients", "optimizer_states", "activations", "logits", "workspace",
                  "overhead")

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in self.COMPONENTS)

    def breakdown(self) -> dict[str, int]:
        """Component name -> bytes, in display order."""
        return {c: getattr(self, c) for c in self.COMPONENTS}

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("settings")
        return {**out, "total": self.total}

    def table(self) -> str:
        """The breakdown in GB, one component per line, then the total."""
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        head = (f"{self.model} {self.method} {self.dtype}, batch {self.batch} x seq_len {self.seq_len}, "
                f"r={self.rank}, {self.optimizer}{ckpt}: {self.n_params / 1e9:.2f} B params, "
                f"{self.trainable_params / 1e6:.1f} M trainable")
        rows = [f"  {c.replace('_', ' '):<17}{v / GB:>9.2f} GB" for c, v in self.breakdown().items()]
        return "\n".join([head, *rows, f"  {'total':<17}{self.total / GB:>9.2f} GB"])

    __str__ = table


def _targets(arch: ArchSpec, target_modules: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = arch.linear_modules  # the family's own projection names (Phi-3: qkv_proj, gate_up_proj)
    if target_modules == "all-linear":
        return names
    mods = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    bad = [m for m in mods if m not in names]
    if bad or not mods:
        raise ValueError(f"target_modules={target_modules!r}: use 'all-linear' or names from {names} "
                         f"({arch.family}).")
    return mods


def _layer_bytes(arch: ArchSpec, method: str, targets: tuple[str, ...], rank: int, res: int, attn_b: int,
                 mlp_b: int, autocast: bool, mask: int) -> float:
    """Bytes autograd saves per token in one decoder layer (see the module docstring)."""
    h, inter = arch.hidden, arch.intermediate
    a, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    total = 2 * (4 * h + 4)  # two RMSNorm inputs, upcast to fp32, and 1/rms
    total += attn_b * (2 * a + 2 * kv) + 4 * arch.heads  # q, k, v, attention output; log-sum-exp
    if arch.fused:  # Phi-3: v is a slice of qkv_proj's output, which stays whole; o_proj gets a contiguous copy
        total += attn_b * (2 * a + kv)
    total += mlp_b * 3 * inter  # gate, up, SiLU(gate)
    # projection inputs, grouped by the tensor they read: (modules, width, dtype bytes, already saved)
    qkv, gate_up = (("qkv_proj",), ("gate_up_proj",)) if arch.fused else (("q_proj", "k_proj", "v_proj"),
                                                                          ("gate_proj", "up_proj"))
    groups = [(qkv, h, res, False), (("o_proj",), a, attn_b, True),
              (gate_up, h, res, False), (("down_proj",), inter, mlp_b, False)]
    if method == "full":
        total += 2 * res * h  # normalised states the RMSNorm weights need
        for mods, width, dt, saved in groups:
            shared = dt == 2 or not autocast
            total += (0 if saved else dt * width) if shared else len(mods) * 2 * width
        return total
    for mods, width, dt, saved in groups:
        n = sum(m in targets for m in mods)
        if n == 0:
            continue
        if autocast:  # peft casts to its fp32 adapter, autocast makes a bf16 copy per projection
            total += n * (2 + mask) * width
        elif mask:  # dropout output (fp32) and its mask per projection
            total += n * (4 + mask) * width
        elif dt == 4:  # fp32 input read directly by the fp32 adapter: saved once
            total += 0 if saved else 4 * width
        else:  # bf16 input cast to fp32 by peft, one copy per projection
            total += n * 4 * width
        total += n * rank * (2 if autocast else 4)  # lora_A output
    return total


def plan_memory(config_or_model_id: Any, method: str = "lora", batch: int = 1, seq_len: int = 512,
                rank: int = 16, gradient_checkpointing: bool = False, optimizer: str = "adamw",
                target_modules: str | list[str] = "all-linear", dtype: str = "bf16", *,
                lora_dropout: float = 0.0, autocast: bool | None = None, kbit_upcast: bool = True,
                device: str = "cuda") -> MemoryPlan:
    """Predict a fine-tuning run's peak memory from the model config alone (no weights are loaded).

    ``autocast`` (default: on for bf16) is Trainer/TRL's ``bf16=True``; ``kbit_upcast`` means QLoRA went
    through ``prepare_model_for_kbit_training``; ``device="cpu"`` drops the CUDA context overhead.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: use one of {tuple(OPTIMIZERS)}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {tuple(DTYPES)}.")
    for name, value in (("batch", batch), ("seq_len", seq_len), ("rank", rank)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer.")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device={device!r}: use 'cuda' or 'cpu'.")
    settings = {k: v for k, v in locals().items() if k not in ("name", "value")}
    arch = arch_spec(config_or_model_id)
    targets = _targets(arch, target_modules)
    counts, shapes = arch.param_counts(), arch.linear_shapes()
    w = DTYPES[dtype]
    autocast = dtype == "bf16" if autocast is None else autocast
    upcast = method == "qlora" and kbit_upcast
    res = 4 if upcast else w  # residual stream, norm outputs
    attn_b = 2 if autocast else res
    mlp_b = res if upcast else (2 if autocast else w)  # bnb casts its output back to the fp32 input dtype
    tokens = batch * seq_len

    if method == "qlora":
        other = counts["embeddings"] + counts["lm_head"] + counts["norms"] + counts["biases"]
        weights = counts["linear"] * NF4_BYTES + other * (4 if upcast else w)
    else:
        weights = arch.n_params * w
    lora_params = 0 if method == "full" else arch.layers * rank * sum(sum(shapes[m]) for m in targets)
    trainable = arch.n_params if method == "full" else lora_params
    p_bytes = w if method == "full" else 4
    state = OPTIMIZERS[optimizer]
    mask = (1 if device == "cuda" else 4) if lora_dropout > 0 and method != "full" else 0
    per_layer = _layer_bytes(arch, method, targets, rank, res, attn_b, mlp_b, autocast, mask)
    per_head = 4 * arch.hidden + 4 + (2 * res * arch.hidden if method == "full" else 0)
    stored = arch.layers * (res * arch.hidden if gradient_checkpointing else per_layer)
    activations = tokens * (stored + per_head + (per_layer if gradient_checkpointing else 0))
    workspace = 2 * lora_params if autocast else 0
    if upcast and autocast:
        workspace += 2 * arch.vocab * arch.hidden  # bf16 copy of the fp32 lm_head
    if method == "qlora":
        workspace += 2 * max(i * o for i, o in shapes.values())
    if method == "full" and autocast and w == 4:
        workspace += 2 * counts["linear"]
    return MemoryPlan(
        model=arch.name, method=method, dtype=dtype, batch=batch, seq_len=seq_len, rank=rank,
        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, n_params=arch.n_params,
        trainable_params=trainable, weights=int(weights), lora=lora_params * 4,
        gradients=trainable * p_bytes if method == "full" else lora_params * 4,
        optimizer_states=int(trainable * (2 * p_bytes if state is None else state)),
        activations=int(activations), logits=LOGIT_BYTES_PER_VOCAB * arch.vocab * tokens,
        workspace=int(workspace), overhead=CUDA_CONTEXT_BYTES if device == "cuda" else 0,
        details={"activation_bytes_per_token_per_layer": per_layer, "autocast": autocast,
                 "kbit_upcast": upcast, "targets": list(targets), "arch": arch.as_dict()},
        settings={**settings, "config_or_model_id": arch},
    )


def _replan(plan: MemoryPlan, **changes: Any) -> MemoryPlan:
    return plan_memory(**{**plan.settings, **changes})


# --------------------------------------------------------------------------------------------- preflight
def _free_memory() -> tuple[int, str]:
    """Bytes a new allocation can use: CUDA free memory on a discrete GPU, else MemAvailable.

    On an integrated GPU (a Spark's GB10) CUDA's free memory is the kernel's MemFree, which counts the page
    cache as used: after reading a 141 GB checkpoint it would refuse a run that fits. MemAvailable counts
    the page cache as free, because the kernel hands it back on demand.
    """
    import torch

    if torch.cuda.is_available() and not is_integrated_gpu():
        return torch.cuda.mem_get_info()[0], f"free on {torch.cuda.get_device_name(0)}"
    where = (f"MemAvailable (unified memory of {torch.cuda.get_device_name(0)}, page cache counted as free)"
             if torch.cuda.is_available() else "MemAvailable (system RAM)")
    return _available(_meminfo()), where


def preflight(plan: MemoryPlan, available: int | None = None, headroom: float = 0.9,
              verbose: bool = True) -> dict:
    """Refuse (``PreflightError``) a run whose plan exceeds ``headroom`` x free memory, before loading weights."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom={headroom!r}: use a fraction in (0, 1], e.g. 0.9.")
    where = "given"
    if available is None:
        available, where = _free_memory()
    budget = headroom * available
    need = plan.total
    result = {"ok": need <= budget, "needed": need, "available": int(available), "headroom": headroom,
              "message": ""}
    if result["ok"]:
        result["message"] = (f"preflight OK: plan needs {need / GB:.1f} GB, {available / GB:.1f} GB {where} "
                             f"({100 * need / available:.0f} %, limit {100 * headroom:.0f} %).")
        if verbose:
            print(result["message"])
        return result
    tips = []
    if plan.method != "qlora":
        q, qg = _replan(plan, method="qlora"), _replan(plan, method="qlora", gradient_checkpointing=True)
        tips.append(f"use method='qlora' (4-bit weights): {plan.weights / GB:.1f} -> {q.weights / GB:.1f} GB of "
                    f"weights, {q.total / GB:.1f} GB in all ({qg.total / GB:.1f} GB with gradient checkpointing)")
    tokens_gb = (plan.activations + plan.logits) / GB
    tips.append(f"lower batch ({plan.batch}) or seq_len ({plan.seq_len}): activations + logits are "
                f"{tokens_gb:.1f} GB and grow linearly with batch x seq_len")
    if not plan.gradient_checkpointing:
        g = _replan(plan, gradient_checkpointing=True)
        tips.append(f"set gradient_checkpointing=True: activations {plan.activations / GB:.1f} -> "
                    f"{g.activations / GB:.1f} GB (about 30 % slower)")
    if plan.optimizer == "adamw" and plan.optimizer_states > 0.05 * need:
        tips.append("use optimizer='adamw_8bit' (2 bytes instead of 8 per trainable parameter)")
    tips.append("free memory held elsewhere: shut down other notebook kernels; on a Spark the page cache "
                "shares the unified memory, so in a terminal, before starting Jupyter, run:\n"
                f"      {DROP_CACHES}")
    result["message"] = (
        f"Memory preflight failed: {plan.model} {plan.method} needs {need / GB:.1f} GB but only "
        f"{available / GB:.1f} GB is {where} (limit {headroom:.0%} = {budget / GB:.1f} GB). Nothing has been "
        "loaded. To fit:\n" + "\n".join(f"  - {t}" for t in tips)
    )
    raise PreflightError(result["message"])


# --------------------------------------------------------------------------------------------- plot
def plot_memory(plan: MemoryPlan, measured: int | float | MemoryTracker | None = None, ax: Any = None,
                capacity: int | None = None) -> Any:
    """Stacked bar of the plan's components next to the measured peak (bytes or a ``MemoryTracker``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    bottom = 0.0
    colors = plt.get_cmap("tab10").colors
    for i, (name, value) in enumerate(plan.breakdown().items()):
        if value <= 0:
            continue
        ax.bar("plan", value / GB, bottom=bottom, color=colors[i % 10], label=name.replace("_", " "))
        bottom += value / GB
    if measured is not None:
        peak = measured.peak if isinstance(measured, MemoryTracker) else float(measured)
        ax.bar("measured peak", peak / GB, color="0.35")
        ax.text(1, peak / GB, f"{peak / GB:.2f}", ha="center", va="bottom")
    ax.text(0, bottom, f"{bottom:.2f}", ha="center", va="bottom")
    if capacity:
        ax.axhline(capacity / GB, color="red", linestyle="--", label=f"capacity {capacity / GB:.0f} GB")
    ax.set_ylabel("GB")
    ax.set_title(f"{plan.model}: {plan.method} {plan.dtype}, batch {plan.batch} x {plan.seq_len}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax
