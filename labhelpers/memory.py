"""Memory, measured, planned and refused: one module for the three questions a lab asks about memory.

- measured: see it (``report_memory``), measure a block's peak (``track_memory``), read the free memory a new
  run can use (``free_memory``), count the bytes autograd saves for backward (``saved_activation_bytes``);
- planned: ``plan_memory`` computes a fine-tuning run's peak from the model config alone, for one process or per
  rank of a distributed run (FSDP full sharding or plain data parallel); ``plot_memory`` draws it;
- refused: ``preflight`` refuses a run that cannot fit before any weights load; ``sparks_needed`` says how many
  Sparks a run needs (one, two with FSDP full sharding, or more).

On a DGX Spark the GPU and CPU share one 128 GB pool, so the system line of the report is the one that
matters; "GB" here is always 10**9 bytes.

How the plan counts each term:
- weights: every parameter at 2 (bf16) or 4 (fp32) bytes. QLoRA: decoder projections in NF4 with double
  quantisation = 0.5 + 1/64 (8-bit absmax per 64 weights) + 4/(64*256) (fp32 absmax per 256 absmax) bytes
  per weight; embeddings, norms and lm_head are not quantised (transformers skips the output embedding,
  bitsandbytes only replaces nn.Linear) and stay in ``dtype``, or fp32 after
  ``peft.prepare_model_for_kbit_training`` (``kbit_upcast=True``: what ``load_model(..., quantization="4bit",
  for_training=True)`` runs).
- lora: r * (in + out) per adapted projection per layer, fp32 (peft upcasts adapters by default), except
  QLoRA: bf16, as TRL 1.16's SFTTrainer casts a quantized model's trainable adapter weights
  (``trl/trainer/sft_trainer.py``, "the PEFT adapter weights are converted to bf16", QLoRA paper section 3).
- gradients: one per trainable parameter, in its dtype. optimizer: AdamW 2 states in the parameter dtype
  (torch's AdamW allocates them ``zeros_like(param)``: bf16 for QLoRA's adapter); 8-bit AdamW 2 bytes + 2 fp32
  absmax per 256; SGD (no momentum) none.
- activations: what autograd keeps for backward, per token per layer, counted tensor by tensor for a
  Llama layer with SDPA attention (no seq^2 scores): 2 RMSNorm inputs upcast to fp32 (4h+4 each);
  q, k, v and the attention output (2a+2kv elements, a = heads*head_dim, kv = kv_heads*head_dim) and
  the softmax log-sum-exp (4 bytes per head); gate, up and SiLU outputs (3I elements); the inputs of the
  adapted projections (shared in fp32 training, one bf16 copy per projection under autocast, one fp32 copy
  per projection when peft casts a bf16 input to its fp32 adapter; with LoRA dropout, its output replaces that
  copy and its mask is added: 1 byte on CUDA, the input's dtype on a CPU); r per adapter
  (lora_A output). Phi-3's fused ``qkv_proj`` keeps its whole output alive (v is a slice of it) and copies
  the attention output for ``o_proj``: 2a+kv more elements. Gradient checkpointing keeps only each layer's input
  (h elements) and recomputes one layer at a time during backward. Verified against
  ``torch.autograd.graph.saved_tensors_hooks``.
  ``packed=True`` (padding-free packing, what ``sft_config`` trains with): the batch's rows are one sequence of
  L = batch * seq_len tokens whose ``position_ids`` restart per example, so transformers builds one boolean
  block-diagonal (1, 1, L, L) mask (L^2 bytes) and SDPA in every decoder layer turns it into its own fp32 copy
  that autograd keeps (4 L^2 bytes per layer); with gradient checkpointing the boolean mask stays alive (a
  checkpointed input) and one recomputed layer holds its fp32 copy: 5 L^2 bytes.
- logits, ``lm_head="full"`` (Trainer, DPO and the other trainers that build the logits): the loss upcasts
  logits to fp32; at the start of backward the saved log-softmax, its gradient and the logits gradient
  coexist: 12 bytes * vocab per token. ``lm_head="chunked"`` (TRL 1.16's SFTTrainer: ``add_fused_lm_head``,
  ``trl/kernels/chunked_logprob.py``): no full logits; the head is computed in tiles of at most 4,096 tokens x
  32,768 vocabulary entries, recomputed in backward. On a CPU (no Triton) the tile is folded with torch ops in
  fp32 and the fold's temporaries peak at ``CHUNKED_TILE_BYTES_CPU`` bytes per tile element (counted with torch's
  profiler, tests/test_memory.py); on a GPU the Triton kernels work in place on one tile in the compute dtype,
  plus the fp32 hidden-state gradient and the hidden states gathered for the head (6 bytes * hidden per
  token) and, for an fp32 head under autocast, a bf16 copy of one weight chunk.
- workspace: bf16 copies autocast keeps of fp32 weights (adapters; lm_head after kbit upcast) and, for
  QLoRA, the largest projection de-quantised to bf16 during a matmul.
- overhead: the CUDA context and cuBLAS workspaces that torch's counters do not see (0 for device="cpu").

The total is a sum, so it slightly over-states a peak where two transients cannot coexist (with
gradient checkpointing: the logits and the recomputed layer). ``bench/memory_plan.py`` compares it with
measured peaks; the CUDA allocator's cache (reserved minus allocated, typically 5-10 %) is not in the
plan, which is why ``preflight`` keeps 10 % headroom.

Per rank (``world_size`` > 1), each rank runs its own micro-batch, so activations, logits, workspace and
overhead are per rank as above. ``sharding="full_shard"`` (FSDP FULL_SHARD / FSDP2 reshard after forward):
weights, adapters, gradients and optimizer states are split evenly (ceil(x / world_size)), and a rank
gathers one wrapped unit's full parameters while it computes with it: ``communication`` is the largest
unit (a decoder layer, or the root: embeddings + lm_head + final norm). ``sharding="no_shard"`` (plain
data parallel, DDP): everything is replicated, and DDP's reducer keeps its gradient buckets, a second copy
of the trainable gradients (``communication``).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labhelpers.arch import ArchSpec, arch_spec

GB = 1e9

# --------------------------------------------------------------------------------------------- report
def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty off Linux)."""
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
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


def report_memory() -> MemoryReport:
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
        text = Path("/proc/self/status").read_text(encoding="ascii")
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def _release_freed_heap() -> None:
    """Hand the heap pages glibc keeps after ``free`` back to the kernel (``malloc_trim(0)``; no-op off glibc).

    Otherwise a block that reuses memory an earlier cell freed grows the RSS by nothing for it, and the
    measured peak under-counts what the block itself needs.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33): ten ``size_t`` counters."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_counter() -> Callable[[], int] | None:
    """A function returning the bytes malloc has handed out and not taken back (glibc's ``mallinfo2``:
    ``uordblks`` in its arenas + ``hblkhd`` in mmapped blocks), or None where the C library has no ``mallinfo2``.

    The CPU counterpart of ``torch.cuda.memory_allocated``: torch's CPU tensors come from malloc, and the bytes
    it has freed but keeps for reuse (counted in the RSS) are not in it.
    """
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    info.restype = _MallInfo2
    info.argtypes = []

    def allocated() -> int:
        m = info()
        return int(m.uordblks + m.hblkhd)

    return allocated


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
    """What ``track_memory`` measured, in bytes: before, peak and delta (= peak - before).

    ``rss_peak`` (CPU): the process's resident-memory peak, which also holds what the C library freed and keeps
    for reuse; ``peak`` leaves that out where the C library can say how much it has handed out (glibc).
    """

    label: str
    device: str
    before: int = 0
    peak: int = 0
    after: int = 0
    device_total: int = 0
    method: str = ""
    rss_peak: int = 0

    @property
    def delta(self) -> int:
        return self.peak - self.before

    @property
    def percent(self) -> float:
        return 100.0 * self.peak / self.device_total if self.device_total else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "delta": self.delta, "percent": self.percent}

    def __str__(self) -> str:
        line = (f"[{self.label}] memory before: {self.before / GB:.2f} GB, peak: {self.peak / GB:.2f} GB, "
                f"delta: {self.delta / GB:.2f} GB, {self.percent:.1f} % of device "
                f"({self.device_total / GB:.1f} GB, {self.method})")
        if self.rss_peak > self.peak:
            line += (f"\n  resident peak {self.rss_peak / GB:.2f} GB: the C library kept "
                     f"{(self.rss_peak - self.peak) / GB:.2f} GB of freed memory for reuse")
        return line


@contextlib.contextmanager
def track_memory(label: str = "training", device: str | None = None, verbose: bool = True,
                 interval: float = 0.02) -> Iterator[MemoryTracker]:
    """Measure the peak memory of a block; prints Unsloth-style bookends (before, peak, delta, % of device).

    CUDA: torch's ``max_memory_allocated`` after ``reset_peak_memory_stats`` (what the caching allocator keeps
    free is not in it). CPU, the same measure: the RSS at entry plus the largest growth of the bytes malloc has
    handed out (glibc's ``mallinfo2``), read by a background sampler every ``interval`` s, plus any rise of the
    kernel's high-water mark above every sampled RSS (memory used and freed between two samples). Beside it,
    ``rss_peak``: the process RSS peak, from the kernel's high-water mark reset at entry
    (``/proc/self/clear_refs``; ``ru_maxrss`` cannot be reset) and the sampler, after glibc has returned the
    memory earlier code freed. glibc keeps blocks it freed for reuse (bench/README.md: on lab 05's Qwen2 copy
    about 0.2 GB of freed activations, 20-25 % of the growth), so the RSS peak depends on the C library as
    well as on the work; where ``mallinfo2`` is missing (not glibc), ``peak`` is the RSS peak.
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
        _release_freed_heap()
        tracker.before = _rss()
        tracker.device_total = _meminfo().get("MemTotal", 0)
        hwm = _reset_hwm()
        allocated = _malloc_counter()
        tracker.method = ("RSS at entry + malloc's allocated bytes (sampler)" if allocated else
                          "process RSS (kernel high-water mark + sampler)" if hwm else "process RSS (sampler)")
        samples = [tracker.before]
        allocs = [allocated()] if allocated else []

        def sample() -> None:
            while not stop.wait(interval):
                samples.append(_rss())
                if allocated:
                    allocs.append(allocated())

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
            sampled = max(samples + [tracker.after])
            tracker.rss_peak = max(sampled, (_read_hwm() or 0) if hwm else 0)
            if allocated:
                allocs.append(allocated())
                # + what the kernel saw above every sample: pages touched and freed between two samples
                tracker.peak = tracker.before + max(0, max(allocs) - allocs[0]) + tracker.rss_peak - sampled
            else:
                tracker.peak = tracker.rss_peak
        if verbose:
            print(tracker)


# ---------------------------------------------------------------------------------------- saved activations
def saved_activation_bytes(model: Any, input_ids: Any, modules: list[Any] | None = None) -> int:
    """Bytes autograd keeps for backward inside ``modules`` during one forward of ``input_ids`` (parameters excluded).

    ``modules`` defaults to every decoder layer (modules whose class name ends in ``DecoderLayer``): the
    activations term of ``plan_memory`` without gradient checkpointing, counted tensor by tensor with
    ``torch.autograd.graph.saved_tensors_hooks``. Each storage counts once (a view saved twice is one tensor),
    so run it with checkpointing off: under checkpointing the layers save nothing until backward recomputes
    them. The forward builds no logits loss (no ``labels``); gradients are never computed.
    """
    import torch

    layers = modules if modules is not None else [m for m in model.modules()
                                                  if type(m).__name__.endswith("DecoderLayer")]
    if not layers:
        raise ValueError(f"saved_activation_bytes: {type(model).__name__} has no decoder layers; pass modules=.")
    params = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    kept: list[Any] = []  # alive until the count is done, so no other tensor can reuse a counted address
    seen: set[int] = set()
    depth = [0]
    total = [0]

    def pack(t: Any) -> None:  # hands autograd a placeholder: keeping the tensor would tie it to its own graph
        if depth[0] and isinstance(t, torch.Tensor) and t.dim() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params and ptr not in seen:
                seen.add(ptr)
                kept.append(t)
                total[0] += t.untyped_storage().nbytes()
        return None

    hooks = [h for m in layers for h in (m.register_forward_pre_hook(lambda *a: depth.__setitem__(0, depth[0] + 1)),
                                         m.register_forward_hook(lambda *a: depth.__setitem__(0, depth[0] - 1)))]
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
            model(input_ids=input_ids)
    finally:
        for hook in hooks:
            hook.remove()
        kept.clear()
    return total[0]


# --------------------------------------------------------------------------------------------- free memory
def free_memory() -> tuple[int, str]:
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




METHODS = ("full", "lora", "qlora")
OPTIMIZERS = {"adamw": None, "adamw_8bit": 2 + 8 / 256, "paged_adamw_8bit": 2 + 8 / 256, "sgd": 0.0}
DTYPES = {"bf16": 2, "fp32": 4}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
CUDA_CONTEXT_BYTES = int(0.8 * GB)  # torch 2.11 + CUDA 13 context and cuBLAS handles, measured on an H200
LOGIT_BYTES_PER_VOCAB = 12  # fp32 log-softmax output + its grad + the logits grad at backward start
LM_HEADS = ("full", "chunked")
CHUNK_TOKENS, CHUNK_VOCAB = 4096, 32768  # trl 1.16: TOKEN_CHUNK_SIZE, trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
CHUNKED_TILE_BYTES_CPU = 33  # the torch fold's fp32 temporaries, per tile element (forward + backward peak)
SHARDING = ("full_shard", "no_shard")


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
    communication: int = 0
    reference: int = 0  # GRPO/DPO-style KL reference kept in memory (beta > 0)
    kv_cache: int = 0  # generation's key/value cache (GRPO: every completion of one generation call)
    world_size: int = 1
    sharding: str = "none"
    details: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict, repr=False)

    COMPONENTS = ("weights", "lora", "reference", "gradients", "optimizer_states", "activations", "logits",
                  "kv_cache", "workspace", "communication", "overhead")
    _SHOWN_IF_USED = ("reference", "kv_cache", "communication")

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
        if self.world_size > 1:
            head += f"; per rank of {self.world_size} ({self.sharding})"
        rows = [f"  {c.replace('_', ' '):<17}{v / GB:>9.2f} GB" for c, v in self.breakdown().items()
                if c not in self._SHOWN_IF_USED or v > 0 or (c == "communication" and self.world_size > 1)]
        return "\n".join([head, *rows, f"  {'total':<17}{self.total / GB:>9.2f} GB"])

    __str__ = table


def _targets(arch: ArchSpec, target_modules: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = arch.linear_modules  # the family's own projection names (Phi-3: qkv_proj, gate_up_proj)
    if target_modules == "all-linear":
        return names
    mods = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    bad = [m for m in mods if m not in names]
    if bad or not mods:
        raise ValueError(f"target_modules={target_modules!r}: use 'all-linear' or names from {names} ({arch.family}).")
    return mods


def _layer_bytes(arch: ArchSpec, method: str, targets: tuple[str, ...], rank: int, res: int, attn_b: int,
                 mlp_b: int, autocast: bool, dropout: str, adapter_b: int = 4) -> float:
    """Bytes autograd saves per token in one decoder layer (see the module docstring).

    ``dropout``: "" (no LoRA dropout), "bool" (CUDA's fused dropout keeps a 1-byte mask) or "dtype" (on a CPU
    dropout multiplies by a noise tensor in the input's dtype, which autograd keeps).
    """
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
        if autocast or adapter_b == 2:  # a bf16 copy of the input per projection: autocast's for the fp32
            # adapter, or peft's cast to TRL's bf16 QLoRA adapter (before dropout: a bf16 mask on a CPU)
            mask = {"": 0, "bool": 1, "dtype": 2 if adapter_b == 2 else dt}[dropout]
            total += n * (2 + mask) * width
        elif dropout:  # dropout output (fp32) and its mask per projection
            total += n * (4 + (1 if dropout == "bool" else 4)) * width
        elif dt == 4:  # fp32 input read directly by the fp32 adapter: saved once
            total += 0 if saved else 4 * width
        else:  # bf16 input cast to fp32 by peft, one copy per projection
            total += n * 4 * width
        total += n * rank * (2 if autocast else adapter_b)  # lora_A output
    return total


def _unit_bytes(arch: ArchSpec, method: str, w: int, upcast: bool, lora_params: int) -> dict[str, int]:
    """Full (unsharded) bytes of the units FSDP wraps: one decoder layer with its adapters, and the root."""
    counts = arch.param_counts()
    other = 4 if upcast else w  # norms, biases, embeddings, lm_head: fp32 after QLoRA's kbit upcast
    linear = counts["linear"] // arch.layers * (NF4_BYTES if method == "qlora" else w)
    layer = linear + ((counts["norms"] - arch.hidden) // arch.layers + counts["biases"] // arch.layers) * other
    root = (counts["embeddings"] + counts["lm_head"] + arch.hidden) * other  # + the final norm
    adapter_b = 2 if method == "qlora" else 4
    return {"decoder_layer": int(layer + adapter_b * lora_params // arch.layers), "root": int(root)}


def plan_memory(config_or_model_id: Any, method: str = "lora", batch: int = 1, seq_len: int = 512,
                rank: int = 16, gradient_checkpointing: bool = False, optimizer: str = "adamw",
                target_modules: str | list[str] = "all-linear", dtype: str = "bf16", *,
                lora_dropout: float = 0.0, autocast: bool | None = None, kbit_upcast: bool = True,
                device: str = "cuda", world_size: int = 1, sharding: str = "full_shard",
                lm_head: str = "full", packed: bool = False, reference: bool = False,
                kv_rows: int = 0, kv_tokens: int = 0) -> MemoryPlan:
    """Predict a fine-tuning run's peak memory (per rank when ``world_size`` > 1) from the model config alone.

    ``autocast`` (default: on for bf16) is Trainer/TRL's ``bf16=True``; ``kbit_upcast`` means QLoRA went
    through ``prepare_model_for_kbit_training``; ``device="cpu"`` drops the CUDA context overhead;
    ``world_size`` processes (one per Spark) with ``sharding`` "full_shard" (FSDP) or "no_shard" (data parallel);
    ``lm_head`` "full" (the trainer builds the logits) or "chunked" (TRL's SFTTrainer: the fused, tiled head);
    ``packed``: a padding-free packed batch (one sequence of batch x seq_len tokens, block-diagonal mask).
    GRPO (lab 12): ``reference`` keeps a KL reference (TRL's ``beta`` > 0): for LoRA a frozen copy of the adapter
    (TRL 1.16 copies a loaded adapter as "ref"; with a fresh ``peft_config`` the reference is the adapter switched
    off and costs nothing, so this is the larger case), for a full fine-tune a copy of the weights.
    ``kv_rows`` x ``kv_tokens``: the key/value cache of one generation call (completions sampled together x
    prompt + completion tokens), 2 x layers x kv_heads x head_dim values per token in the weights' dtype. It is
    live while generating, not while the loss runs, so adding it to the training peak over-counts: the plan is
    an upper bound by up to this term.
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
    for name, value in (("kv_rows", kv_rows), ("kv_tokens", kv_tokens)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r}: must be a whole number (0: no generation).")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device={device!r}: use 'cuda' or 'cpu'.")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r}: the number of processes, a positive integer (2 for two Sparks).")
    if sharding not in SHARDING:
        raise ValueError(f"sharding={sharding!r}: use 'full_shard' (FSDP) or 'no_shard' (plain data parallel).")
    if lm_head not in LM_HEADS:
        raise ValueError(f"lm_head={lm_head!r}: use 'full' (the loss reads the logits) or 'chunked' "
                         "(TRL's SFTTrainer: the fused head, no full logits).")
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
    adapter_b = 2 if method == "qlora" else 4  # TRL casts a quantized model's adapter to bf16
    p_bytes = w if method == "full" else adapter_b
    state = OPTIMIZERS[optimizer]
    dropout = ("bool" if device == "cuda" else "dtype") if lora_dropout > 0 and method != "full" else ""
    per_layer = _layer_bytes(arch, method, targets, rank, res, attn_b, mlp_b, autocast, dropout, adapter_b)
    per_head = 4 * arch.hidden + 4 + (2 * res * arch.hidden if method == "full" else 0)
    stored = arch.layers * (res * arch.hidden if gradient_checkpointing else per_layer)
    activations = tokens * (stored + per_head + (per_layer if gradient_checkpointing else 0))
    packed_mask = (5 if gradient_checkpointing else 4 * arch.layers) * tokens**2 if packed else 0
    activations += packed_mask
    workspace = 2 * lora_params if autocast and adapter_b == 4 else 0  # bf16 copies of fp32 adapters
    if upcast and autocast:
        workspace += 2 * arch.vocab * arch.hidden  # bf16 copy of the fp32 lm_head
    if method == "qlora":
        workspace += 2 * max(i * o for i, o in shapes.values())
    if method == "full" and autocast and w == 4:
        workspace += 2 * counts["linear"]
    gradients = trainable * p_bytes
    optimizer_states = int(trainable * (2 * p_bytes if state is None else state))
    weights, lora, communication = int(weights), lora_params * adapter_b, 0
    ref_bytes = (weights if method == "full" else lora) if reference else 0
    kv_b = 2 if method == "qlora" else w  # the cache is in the compute dtype (bf16 for a 4-bit model)
    kv_cache = 2 * arch.layers * arch.kv_heads * arch.head_dim * kv_b * kv_rows * kv_tokens
    units = _unit_bytes(arch, method, w, upcast, lora_params)
    if world_size > 1 and sharding == "full_shard":  # each rank keeps 1/N; one unit is gathered at a time
        weights, lora, gradients, optimizer_states = (math.ceil(x / world_size) for x in
                                                      (weights, lora, gradients, optimizer_states))
        communication = max(units.values())
    elif world_size > 1:  # DDP: all replicated, plus the reducer's gradient buckets
        communication = gradients
    return MemoryPlan(
        model=arch.name, method=method, dtype=dtype, batch=batch, seq_len=seq_len, rank=rank,
        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, n_params=arch.n_params,
        trainable_params=trainable, weights=weights, lora=lora, gradients=gradients,
        optimizer_states=optimizer_states, communication=communication, world_size=world_size,
        reference=int(ref_bytes), kv_cache=int(kv_cache),
        sharding=sharding if world_size > 1 else "none",
        activations=int(activations), logits=_logit_bytes(arch, lm_head, tokens, device, autocast, res),
        workspace=int(workspace), overhead=CUDA_CONTEXT_BYTES if device == "cuda" else 0,
        details={"activation_bytes_per_token_per_layer": per_layer, "autocast": autocast, "lm_head": lm_head,
                 "packed_mask_bytes": packed_mask,
                 "kbit_upcast": upcast, "targets": list(targets), "arch": arch.as_dict(), "unit_bytes": units},
        settings={**settings, "config_or_model_id": arch},
    )


def _logit_bytes(arch: ArchSpec, lm_head: str, tokens: int, device: str, autocast: bool, head_b: int) -> int:
    """Peak bytes of the LM head and its loss, forward and backward (see the module docstring)."""
    if lm_head == "full":
        return LOGIT_BYTES_PER_VOCAB * arch.vocab * tokens
    tile = min(tokens, CHUNK_TOKENS) * min(arch.vocab, CHUNK_VOCAB)
    if device == "cpu":
        return CHUNKED_TILE_BYTES_CPU * tile
    compute_b = 2 if autocast else head_b
    weight_copy = 2 * min(arch.vocab, CHUNK_VOCAB) * arch.hidden if autocast and head_b == 4 else 0
    return compute_b * tile + weight_copy + 6 * arch.hidden * tokens


def _replan(plan: MemoryPlan, **changes: Any) -> MemoryPlan:
    return plan_memory(**{**plan.settings, **changes})


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
        peak = float(getattr(measured, "peak", measured))  # a MemoryTracker or bytes
        ax.bar("measured peak", peak / GB, color="0.35")
        ax.text(1, peak / GB, f"{peak / GB:.2f}", ha="center", va="bottom")
    ax.text(0, bottom, f"{bottom:.2f}", ha="center", va="bottom")
    if capacity:
        ax.axhline(capacity / GB, color="red", linestyle="--", label=f"capacity {capacity / GB:.0f} GB")
    ax.set_ylabel("GB")
    ax.set_title(f"{plan.model}: {plan.method} {plan.dtype}, batch {plan.batch} x {plan.seq_len}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


# ----------------------------------------------------------------------------------------------------- refuse
SPARK_BYTES = int(128e9)  # one DGX Spark: 128 GB of unified memory (NVIDIA's DGX Spark datasheet)
DROP_CACHES = "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"


class PreflightError(MemoryError):
    """The planned run does not fit the free memory; raised before any weights are loaded."""


def preflight(plan: MemoryPlan, available: int | None = None, headroom: float = 0.9, verbose: bool = True) -> dict:
    """Refuse (``PreflightError``) a run whose plan exceeds ``headroom`` x free memory, before loading weights."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom={headroom!r}: use a fraction in (0, 1], e.g. 0.9.")
    where = "given"
    if available is None:
        available, where = free_memory()
    budget = headroom * available
    need = plan.total
    result = {"ok": need <= budget, "needed": need, "available": int(available), "headroom": headroom, "message": ""}
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
    if plan.world_size == 1:
        two = _replan(plan, world_size=2, sharding="full_shard")
        enough = "fits" if two.total <= budget else "still does not fit"
        tips.append(f"shard it over two Sparks (FSDP full shard, lab 11): {two.total / GB:.1f} GB per rank, "
                    f"which {enough} the same limit")
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




def sparks_needed(plan: MemoryPlan, per_spark: float = SPARK_BYTES, headroom: float = 0.9,
                  most: int = 8) -> dict[str, Any]:
    """The fewest Sparks (FSDP full shard, one rank each) whose per-rank plan fits ``headroom`` x ``per_spark``.

    Returns ``{"sparks": N or None, "per_rank": {world_size: bytes}, "budget": bytes, "message": str}``;
    ``sparks`` is None when even ``most`` Sparks do not suffice (what does not shard, activations, logits,
    the gathered unit, stays whole on every rank).
    """
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom={headroom!r}: use a fraction in (0, 1], e.g. 0.9.")
    if not isinstance(most, int) or most < 1:
        raise ValueError(f"most={most!r}: the largest number of Sparks to try, a positive integer.")
    budget = headroom * per_spark
    per_rank: dict[int, int] = {}
    for n in range(1, most + 1):
        per_rank[n] = _replan(plan, world_size=n, sharding="full_shard").total if n > 1 else \
            _replan(plan, world_size=1).total
        if per_rank[n] <= budget:
            break
    fits = [n for n, need in per_rank.items() if need <= budget]
    sparks = fits[0] if fits else None
    name = f"{plan.model} {plan.method} {plan.dtype}"
    if sparks == 1:
        message = f"{name}: one Spark is enough ({per_rank[1] / GB:.1f} GB of {budget / GB:.1f} GB)."
    elif sparks:
        message = (f"{name}: needs {sparks} Sparks ({per_rank[1] / GB:.1f} GB on one; {per_rank[sparks] / GB:.1f} GB "
                   f"per rank with FSDP full shard over {sparks}, limit {budget / GB:.1f} GB).")
    else:
        message = (f"{name}: {most} Sparks are not enough ({per_rank[most] / GB:.1f} GB per rank, limit "
                   f"{budget / GB:.1f} GB): shrink the run first (LoRA or QLoRA, gradient checkpointing, "
                   "a shorter seq_len).")
    return {"sparks": sparks, "per_rank": per_rank, "budget": budget, "message": message}
