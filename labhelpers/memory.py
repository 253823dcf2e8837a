"""Memory, measured: see it (``memory_report``), measure a block's peak (``track_memory``), and read the free
memory a new run can use (``_free_memory``, what ``preflight`` plans against), and count the bytes autograd
saves for backward (``saved_activation_bytes``, the activations term of the plan, measured).

On a DGX Spark the GPU and CPU share one 128 GB pool, so the system line of the report is the one that
matters; "GB" here is always 10**9 bytes. Predicting memory before loading anything is
``labhelpers.planning`` (``plan_memory``, per rank too) and refusing what cannot fit is
``labhelpers.capacity``; their names stay importable from here for code written before the split.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import platform
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

GB = 1e9

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




# Names that moved to labhelpers.planning / labhelpers.capacity, still importable from labhelpers.memory.
_MOVED = {name: "planning" for name in ("MemoryPlan", "plan_memory", "plot_memory", "NF4_BYTES", "METHODS",
                                         "OPTIMIZERS", "DTYPES", "SHARDING", "CUDA_CONTEXT_BYTES")}
_MOVED.update({name: "capacity" for name in ("preflight", "PreflightError", "DROP_CACHES", "sparks_needed")})


def __getattr__(name: str) -> Any:
    """Forward a planning name (``from labhelpers.memory import plan_memory``) to the module that has it now."""
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'labhelpers.memory' has no attribute {name!r}")
