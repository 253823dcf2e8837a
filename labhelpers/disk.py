"""Disk: what the full profile puts on disk (``plan_disk``), and a refusal to start writing a model or GGUF file
that the disk cannot hold (``check_disk_space``).

The plan is computed from the models' configs and what each lab writes (downloads, lab 10's files, adapters and
checkpoints), so lab 00, docs/LAB_PREP.md and docs/FAQ.md show one total.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# llama.cpp's quantization types: (its file-type constant, file size / f16 file size); quantize_gguf checks the
# disk with the ratio, and the disk plan counts lab 10's Q4_K_M file with it
GGUF_QUANT_TYPES = {
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 0.32),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 0.37),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", 0.42),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 0.54),
}


class NotEnoughDiskSpace(OSError):
    """Raised before writing when the target disk cannot hold the result; the message says how much."""


def _existing_parent(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk_space(target: str | Path, needed_bytes: int, what: str) -> int:
    """Raise ``NotEnoughDiskSpace`` if the disk holding ``target`` has less than ``needed_bytes`` free.

    Returns the free bytes. ``target`` may not exist yet (its nearest existing parent is measured).
    """
    where = _existing_parent(Path(target))
    free = shutil.disk_usage(where).free
    if free < needed_bytes:
        raise NotEnoughDiskSpace(
            f"{what} needs about {needed_bytes / 1e9:.1f} GB in {where} but only {free / 1e9:.1f} GB is free: "
            "free some space (old outputs/, unused models in ~/.cache/huggingface) or write to a bigger disk."
        )
    return free


# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class DiskItem:
    """One thing the full profile puts on disk: what, which lab, how many bytes and how they were computed."""

    what: str
    lab: str
    bytes: int
    how: str


@dataclass(frozen=True)
class DiskPlan:
    """The disk the full profile needs, item by item (``table()``), and its ``total`` in bytes."""

    items: tuple[DiskItem, ...]

    @property
    def total(self) -> int:
        return sum(i.bytes for i in self.items)

    def table(self) -> str:
        """A markdown table (docs/LAB_PREP.md and lab 00 print the same one), then the total."""
        rows = ["| what | lab | GB | computed as |", "| --- | --- | ---: | --- |"]
        rows += [f"| {i.what} | {i.lab} | {i.bytes / 1e9:,.1f} | {i.how} |" for i in self.items]
        rows.append(f"| **total** | | **{self.total / 1e9:,.1f}** | |")
        return "\n".join(rows)

    __str__ = table


def plan_disk(model: str = "llama-3.1-8b", big_model: str = "llama-3.1-70b", rank: int = 16,
              save_total_limit: int = 2, big_optimizer: str = "paged_adamw_8bit") -> DiskPlan:
    """The full profile's disk needs, computed from the models' configs and what each lab writes.

    Downloads are bf16 safetensors (2 bytes per parameter; ``hf download --exclude "original/*"``). Lab 10
    writes a merged bf16 copy, an f16 GGUF (2 bytes per parameter) and a Q4_K_M GGUF (``GGUF_QUANT_TYPES``'s
    size ratio, the figure ``quantize_gguf`` checks the disk with). Each training lab saves its adapter and
    keeps ``save_total_limit`` checkpoints of adapter + optimizer states, in the dtypes ``plan_memory`` counts
    them in memory: LoRA on the bf16 8B model an fp32 adapter (peft) with AdamW's two fp32 states (4 + 8 bytes
    per parameter); lab 05's QLoRA a bf16 adapter (TRL casts a quantized model's adapter to bf16) with paged
    8-bit AdamW's states (``big_optimizer``: 2 bytes + 2 fp32 absmax per 256). Not counted: the container
    image (``docker image ls`` shows it).
    """
    from labhelpers.arch import arch_spec
    from labhelpers.memory import plan_memory

    small, big = arch_spec(model), arch_spec(big_model)
    p_small = plan_memory(small, method="lora", rank=rank)
    p_big = plan_memory(big, method="qlora", rank=rank, optimizer=big_optimizer)
    lora_small, lora_big = p_small.trainable_params, p_big.trainable_params
    # bytes per LoRA parameter: the adapter file, and one checkpoint (adapter + optimizer states)
    a_small, ck_small = p_small.lora / lora_small, (p_small.lora + p_small.optimizer_states) / lora_small
    a_big, ck_big = p_big.lora / lora_big, (p_big.lora + p_big.optimizer_states) / lora_big
    q4 = GGUF_QUANT_TYPES["Q4_K_M"][1]
    training_labs = ("03", "06", "07", "08", "09")  # lab 04's two comparison runs save nothing
    items = (
        DiskItem(f"{small.name} download", "00-04, 06-10", 2 * small.n_params, "parameters x 2 bytes (bf16)"),
        DiskItem(f"{big.name} download", "05", 2 * big.n_params, "parameters x 2 bytes (bf16)"),
        DiskItem("merged bf16 model", "10", 2 * small.n_params, "parameters x 2 bytes"),
        DiskItem("f16 GGUF", "10", 2 * small.n_params, "parameters x 2 bytes"),
        DiskItem("Q4_K_M GGUF", "10", int(q4 * 2 * small.n_params), f"f16 GGUF x {q4} (GGUF_QUANT_TYPES)"),
        DiskItem(f"adapters + {save_total_limit} checkpoints, r={rank}", ", ".join(training_labs),
                 int(len(training_labs) * (a_small + save_total_limit * ck_small) * lora_small),
                 f"{lora_small / 1e6:.0f} M LoRA parameters x ({a_small:g} + {save_total_limit} x {ck_small:g}) bytes "
                 "(fp32 adapter, AdamW), per lab"),
        DiskItem(f"QLoRA adapter + {save_total_limit} checkpoints, r={rank}", "05",
                 int((a_big + save_total_limit * ck_big) * lora_big),
                 f"{lora_big / 1e6:.0f} M LoRA parameters x ({a_big:g} + {save_total_limit} x {ck_big:.2f}) bytes "
                 f"(bf16 adapter, {big_optimizer})"),
    )
    return DiskPlan(items)
