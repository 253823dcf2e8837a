"""What the full profile puts on disk (``disk_plan``): downloads, lab 10's files, adapters and checkpoints.

Computed from the models' configs and what each lab writes, so lab 00, docs/LAB_PREP.md and docs/FAQ.md
show one total. (The check before writing is :func:`labhelpers.disk.check_disk_space`.)
"""

from __future__ import annotations

from dataclasses import dataclass


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


def disk_plan(model: str = "llama-3.1-8b", big_model: str = "llama-3.1-70b", rank: int = 16,
              save_total_limit: int = 2) -> DiskPlan:
    """The full profile's disk needs, computed from the models' configs and what each lab writes.

    Downloads are bf16 safetensors (2 bytes per parameter; ``hf download --exclude "original/*"``). Lab 10
    writes a merged bf16 copy, an f16 GGUF (2 bytes per parameter) and a Q4_K_M GGUF (``GGUF_QUANT_TYPES``'s
    size ratio, the figure ``quantize_gguf`` checks the disk with). Each training lab saves its fp32 LoRA
    adapter (4 bytes per parameter) and keeps ``save_total_limit`` checkpoints of adapter + AdamW's two fp32
    states (12 bytes per parameter). Not counted: the container image (``docker image ls`` shows it).
    """
    from .gguf import GGUF_QUANT_TYPES
    from .model_configs import arch_spec
    from .planning import plan_memory

    small, big = arch_spec(model), arch_spec(big_model)
    lora_small = plan_memory(small, method="lora", rank=rank).trainable_params
    lora_big = plan_memory(big, method="qlora", rank=rank).trainable_params
    q4 = GGUF_QUANT_TYPES["Q4_K_M"][1]
    training_labs = ("03", "06", "07", "08", "09")  # lab 04's two comparison runs save nothing
    items = (
        DiskItem(f"{small.name} download", "00-04, 06-10", 2 * small.n_params, "parameters x 2 bytes (bf16)"),
        DiskItem(f"{big.name} download", "05", 2 * big.n_params, "parameters x 2 bytes (bf16)"),
        DiskItem("merged bf16 model", "10", 2 * small.n_params, "parameters x 2 bytes"),
        DiskItem("f16 GGUF", "10", 2 * small.n_params, "parameters x 2 bytes"),
        DiskItem("Q4_K_M GGUF", "10", int(q4 * 2 * small.n_params), f"f16 GGUF x {q4} (labhelpers.gguf)"),
        DiskItem(f"adapters + {save_total_limit} checkpoints, r={rank}", ", ".join(training_labs),
                 len(training_labs) * (4 + save_total_limit * 12) * lora_small,
                 f"{lora_small / 1e6:.0f} M LoRA parameters x (4 + {save_total_limit} x 12) bytes, per lab"),
        DiskItem(f"QLoRA adapter + {save_total_limit} checkpoints, r={rank}", "05",
                 (4 + save_total_limit * 12) * lora_big,
                 f"{lora_big / 1e6:.0f} M LoRA parameters x (4 + {save_total_limit} x 12) bytes"),
    )
    return DiskPlan(items)
