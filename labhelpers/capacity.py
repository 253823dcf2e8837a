"""Refuse a run that cannot fit before any weights load (``preflight``), and say how many Sparks a run needs
(``sparks_needed``): one, two (FSDP full sharding), or more than two.
"""

from __future__ import annotations

from typing import Any

from . import memory
from .planning import GB, MemoryPlan, _replan

SPARK_BYTES = int(128e9)  # one DGX Spark: 128 GB of unified memory (NVIDIA's DGX Spark datasheet)
DROP_CACHES = "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"


class PreflightError(MemoryError):
    """The planned run does not fit the free memory; raised before any weights are loaded."""


def preflight(plan: MemoryPlan, available: int | None = None, headroom: float = 0.9,
              verbose: bool = True) -> dict:
    """Refuse (``PreflightError``) a run whose plan exceeds ``headroom`` x free memory, before loading weights."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom={headroom!r}: use a fraction in (0, 1], e.g. 0.9.")
    where = "given"
    if available is None:
        available, where = memory._free_memory()
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
                   f"{budget / GB:.1f} GB): shrink the run first (LoRA or QLoRA, gradient checkpointing, a shorter seq_len).")
    return {"sparks": sparks, "per_rank": per_rank, "budget": budget, "message": message}
