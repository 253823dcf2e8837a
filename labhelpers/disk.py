"""Disk space: a refusal to start writing a model or GGUF file that the disk cannot hold (``check_disk_space``).

What the full profile downloads and writes is planned in :mod:`labhelpers.storage` (``disk_plan``)."""

from __future__ import annotations

import shutil
from pathlib import Path


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
