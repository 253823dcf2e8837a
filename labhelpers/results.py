"""The cross-method comparison table: each lab saves what it measured, the last labs compare them.

One JSON line per method in ``outputs/<profile>/results.jsonl``; saving a method again replaces its
row. Only measured numbers go in: a field the lab did not measure is left out, never invented.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .profiles import Profile, outputs_root, profile

RESULTS_FILE = "results.jsonl"
COLUMNS = [
    "method",
    "accuracy_before",
    "accuracy_after",
    "margin_before",
    "margin_after",
    "heldout_loss_before",
    "heldout_loss_after",
    "peak_memory_gb",
    "wall_time_s",
    "tokens_per_s",
    "steps",
    "profile",
    "model",
    "timestamp",
]


def results_path(profile_name: str | None = None) -> Path:
    """``outputs/<profile>/results.jsonl`` (``$LABS_OUTPUT_DIR`` respected); default: the current profile."""
    name = profile_name or profile(verbose=False).name
    return outputs_root() / name / RESULTS_FILE


def _check(row: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TypeError(f"save_result: row must be a dict, got {type(row).__name__}.")
    method = row.get("method")
    if not isinstance(method, str) or not method.strip():
        raise ValueError("save_result: field 'method' must be a non-empty string, e.g. 'dpo' or 'lora_sft'.")
    clean: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"save_result: field {key!r} is {value}; save only measured, finite numbers.")
        try:
            json.dumps(value)
        except TypeError as err:
            raise TypeError(
                f"save_result: field {key!r} ({type(value).__name__}) is not JSON-serialisable."
            ) from err
        clean[key] = value
    return clean


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}).") from err
    return rows


def save_result(row: dict[str, Any], lab: Profile | None = None, path: str | Path | None = None) -> Path:
    """Add (or replace, by ``method``) one measured row; fills in profile, model, timestamp. Atomic write."""
    lab = lab if lab is not None else profile(verbose=False)
    clean = _check(row)
    clean.setdefault("profile", lab.name)
    clean.setdefault("model", lab.model)
    clean.setdefault("timestamp", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    target = Path(path) if path is not None else results_path(lab.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in _read(target) if r.get("method") != clean["method"]] + [clean]
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        os.replace(tmp, target)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_results(profile: str | None = None, path: str | Path | None = None) -> Any:
    """The saved rows of a profile (default: the current one) as a pandas DataFrame, known columns first."""
    import pandas as pd

    rows = _read(Path(path) if path is not None else results_path(profile))
    frame = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in COLUMNS]
    return frame.reindex(columns=ordered or ["method"])


def plot_results(df: Any) -> Any:
    """Bars per method: accuracy before/after (where measured) and peak memory (GB). Returns the figure."""
    import matplotlib.pyplot as plt

    if df is None or len(df) == 0:
        raise ValueError("plot_results: no results yet; each lab adds its row with save_result(...).")
    methods = list(df["method"])
    x = range(len(methods))
    fig, (acc, mem) = plt.subplots(1, 2, figsize=(12, 3.8))
    for offset, column, colour in ((-0.2, "accuracy_before", "#bbbbbb"), (0.2, "accuracy_after", "#1f77b4")):
        if column in df:
            acc.bar([i + offset for i in x], df[column].astype(float).fillna(0.0), width=0.4,
                    label=column.replace("accuracy_", ""), color=colour)  # fmt: skip
    acc.set(title="held-out accuracy", ylim=(0, 1.05), xticks=list(x))
    acc.set_xticklabels(methods, rotation=30, ha="right")
    acc.legend(loc="lower right")
    if "peak_memory_gb" in df:
        mem.bar(list(x), df["peak_memory_gb"].astype(float).fillna(0.0), color="#ff7f0e")
    mem.set(title="peak memory (GB)", xticks=list(x))
    mem.set_xticklabels(methods, rotation=30, ha="right")
    fig.tight_layout()
    plt.close(fig)
    return fig
