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

from labhelpers.profiles import Profile, outputs_root, profile
from labhelpers.task import REJECTED_KINDS

RESULTS_FILE = "results.jsonl"
COLUMNS = ["method", "accuracy_before", "accuracy_after", "margin_before", "margin_after", "heldout_loss_before",
           "heldout_loss_after", "peak_memory_gb", "wall_time_s", "tokens_per_s", "steps", "profile", "model",
           "timestamp"]


def results_path(profile_name: str | None = None) -> Path:
    """``outputs/<profile>/results.jsonl`` (``$LABS_OUTPUT_DIR`` respected); default: the current profile."""
    name = profile_name or profile(verbose=False).name
    return outputs_root() / name / RESULTS_FILE


def result_row(figures: dict[str, Any], summary: Any = None, **extra: Any) -> dict[str, Any]:
    """A lab's row for ``save_result``: its measured ``figures``, a ``TrainSummary``'s memory, time, throughput and
    steps, and ``extra``; a figure that is missing or not finite is left out, never invented."""
    row = dict(figures)
    if summary is not None:
        row.update(peak_memory_gb=summary.peak_memory_gb, wall_time_s=summary.wall_time_s,
                   tokens_per_s=summary.tokens_per_s, steps=summary.steps)
    row.update(extra)
    return {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


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
            raise TypeError(f"save_result: field {key!r} ({type(value).__name__}) is not JSON-serialisable.") from err
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


PREFERENCE_LABS: dict[str, str] = {"dpo": "06_dpo", "simpo": "07_simpo", "orpo": "08_orpo", "kto": "09_kto"}


def _value(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    if isinstance(value, float):  # pandas reads a column some rows lack as floats, NaN where missing
        return None if value != value else int(value) if value.is_integer() else value
    return value


def preference_rows(
    df: Any, eval_pairs: int, model: str | None = None, start: str | None = None
) -> tuple[Any, list[str]]:
    """The rows of labs 06-09 scored like this run (same number of held-out pairs, model and start), in lab
    order, and one line per method left out: not run yet, or scored another way (rerun its lab)."""
    import pandas as pd

    by_method = {r["method"]: r for r in df.to_dict("records")} if "method" in df else {}
    wanted = {"eval_pairs": eval_pairs, "model": model, "start": start}
    kept, notes = [], []
    for method, name in PREFERENCE_LABS.items():
        row = by_method.get(method)
        if row is None:
            notes.append(f"{method}: no row yet on this profile (run labs/{name}.ipynb)")
            continue
        differs = [
            f"{key} {_value(row, key)!r} (this run: {want!r})"
            for key, want in wanted.items()
            if want is not None
            and _value(row, key) != want
            and (key == "eval_pairs" or _value(row, key) is not None)
        ]  # a row without a start: not recorded
        if differs:
            notes.append(f"{method}: left out, scored another way: {'; '.join(differs)}; rerun labs/{name}.ipynb")
        else:
            kept.append(row)
    return pd.DataFrame(kept, columns=df.columns if kept else ["method"]), notes


def _get(row: Any, key: str) -> float | None:
    value = _value(row, key)
    return None if value is None else float(value)


def _before_after(row: Any, key: str, fmt: str = ".2f") -> str:
    before, after = _get(row, f"{key}_before"), _get(row, f"{key}_after")
    return "n/a" if before is None or after is None else f"{before:{fmt}} -> {after:{fmt}}"


def preference_table(rows: Any) -> Any:
    """Per method: held-out accuracy per kind of rejected answer before -> after, pairs improved, margin in
    the method's own measure, training time (and per step), peak memory and reference passes."""
    import pandas as pd

    table = {}
    for row in rows.to_dict("records"):
        out = {"margin measure": row.get("measure", "n/a")}
        out.update({label: _before_after(row, f"accuracy_{kind}") for kind, label in REJECTED_KINDS.items()})
        out["all pairs"] = _before_after(row, "accuracy")
        improved, seconds, steps = _get(row, "pairs_improved"), _get(row, "wall_time_s"), _get(row, "steps")
        out["pairs improved"] = "n/a" if improved is None else f"{improved:.0%}"
        out["margin"] = _before_after(row, "margin", "+.3f")
        lr, beta = _get(row, "learning_rate"), _get(row, "beta")
        out["lr, beta"] = "n/a" if lr is None or beta is None else f"{lr:g}, {beta:g}"
        out["training (s)"] = "n/a" if seconds is None else f"{seconds:.0f}"
        out["s per step"] = "n/a" if seconds is None or not steps else f"{seconds / steps:.2f}"
        memory, passes = _get(row, "peak_memory_gb"), _get(row, "reference_passes")
        out["peak memory (GB)"] = "n/a" if memory is None else f"{memory:.2f}"
        out["reference passes"] = "n/a" if passes is None else f"{passes:.0f}"
        table[row["method"]] = out
    return pd.DataFrame(table).T


def preference_findings(rows: Any) -> list[str]:
    """Sentences computed from the rows: the kinds each method moved, what a reference pass cost per step,
    and how far the wrong-fact pairs moved next to the broken-format ones."""
    records = rows.to_dict("records")
    lines = []
    for row in records:
        moves = []
        for kind, label in REJECTED_KINDS.items():
            before, after = _get(row, f"accuracy_{kind}_before"), _get(row, f"accuracy_{kind}_after")
            if before is not None and after is not None:
                verb = "rose" if after > before else "fell" if after < before else "did not move"
                moves.append(f"{label} {verb} ({before:.2f} -> {after:.2f})")
        improved = _get(row, "pairs_improved")
        share = "" if improved is None else f"{improved:.0%} of pairs gained margin; "
        lines.append(f"{row['method'].upper()} ({row.get('measure', '?')} margin): {share}accuracy on "
                     + (", ".join(moves) or "no per-kind figures saved") + ".")  # fmt: skip
    per_step = {r["method"]: (_get(r, "wall_time_s"), _get(r, "steps"), _get(r, "reference_passes")) for r in records}
    timed = {m: (s / n, p) for m, (s, n, p) in per_step.items() if s is not None and n and p is not None}
    with_ref = {m: t for m, (t, p) in timed.items() if p > 0}
    without = {m: t for m, (t, p) in timed.items() if p == 0}
    if with_ref and without:
        ratio = (sum(with_ref.values()) / len(with_ref)) / (sum(without.values()) / len(without))
        lines.append("Seconds per training step with a reference pass: "
                     + ", ".join(f"{m.upper()} {t:.2f}" for m, t in with_ref.items()) + "; without one: "
                     + ", ".join(f"{m.upper()} {t:.2f}" for m, t in without.items())
                     + f". With the reference, a step took {ratio:.1f}x as long on this machine.")  # fmt: skip
    elif timed:
        side = "with" if with_ref else "without"
        lines.append(
            f"Only methods {side} a reference pass have timed rows here: run the other labs of 06-09 "
            "to see what the reference pass costs."
        )
    changes = {}
    for kind in ("broken_format", "wrong_fact"):
        deltas = [a - b for r in records
                  if (b := _get(r, f"accuracy_{kind}_before")) is not None
                  and (a := _get(r, f"accuracy_{kind}_after")) is not None]  # fmt: skip
        if deltas:
            changes[kind] = f"{min(deltas):+.2f} to {max(deltas):+.2f}"
    if len(changes) == 2:
        lines.append(
            f"Accuracy change across methods: broken format {changes['broken_format']}, "
            f"wrong fact or unsafe advice {changes['wrong_fact']}."
        )
    return lines


def plot_results(df: Any) -> Any:
    """Bars per method: held-out accuracy before/after and peak memory (GB), and where the rows have them,
    accuracy change per kind of rejected answer, pairs improved and training time (reference passes noted)."""
    import matplotlib.pyplot as plt

    if df is None or len(df) == 0:
        raise ValueError("plot_results: no results yet; each lab adds its row with save_result(...).")
    methods = list(df["method"])
    x = list(range(len(methods)))
    kinds = [k for k in REJECTED_KINDS if f"accuracy_{k}_after" in df and f"accuracy_{k}_before" in df]
    panels = ["accuracy"] + (["kinds"] if kinds else []) + (["improved"] if "pairs_improved" in df else [])
    panels += (["time"] if "wall_time_s" in df else []) + ["memory"]
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for extra in axes.flat[len(panels) :]:
        fig.delaxes(extra)
    ax = dict(zip(panels, axes.flat, strict=False))
    for offset, column, colour in ((-0.2, "accuracy_before", "#bbbbbb"), (0.2, "accuracy_after", "#1f77b4")):
        if column in df:
            ax["accuracy"].bar([i + offset for i in x], df[column].astype(float).fillna(0.0), width=0.4,
                               label=column.replace("accuracy_", ""), color=colour)  # fmt: skip
    ax["accuracy"].set(title="held-out accuracy", ylim=(0, 1.05))
    ax["accuracy"].legend(loc="lower right")
    if kinds:
        width = 0.8 / len(kinds)
        for j, kind in enumerate(kinds):
            change = df[f"accuracy_{kind}_after"].astype(float) - df[f"accuracy_{kind}_before"].astype(float)
            ax["kinds"].bar([i - 0.4 + width * (j + 0.5) for i in x], change.fillna(0.0), width=width,
                            label=REJECTED_KINDS[kind])  # fmt: skip
        ax["kinds"].axhline(0.0, color="grey", lw=0.8)
        ax["kinds"].set(title="accuracy change, by kind of rejected answer")
        ax["kinds"].legend(loc="best", fontsize="small")
    if "improved" in ax:
        ax["improved"].bar(x, df["pairs_improved"].astype(float).fillna(0.0), color="#2ca02c")
        ax["improved"].axhline(0.5, color="grey", lw=0.8, ls="--")
        ax["improved"].set(title="share of pairs whose margin grew", ylim=(0, 1.05))
    if "time" in ax:
        passes = df["reference_passes"] if "reference_passes" in df else [None] * len(df)
        colours = ["#9467bd" if p is not None and p == p and p > 0 else "#8c564b" for p in passes]
        ax["time"].bar(x, df["wall_time_s"].astype(float).fillna(0.0), color=colours)
        ax["time"].set(title="training time (s); purple: with reference passes")
    if "peak_memory_gb" in df:
        ax["memory"].bar(x, df["peak_memory_gb"].astype(float).fillna(0.0), color="#ff7f0e")
    ax["memory"].set(title="peak memory (GB)")
    for axis in ax.values():
        axis.set_xticks(x)
        axis.set_xticklabels(methods, rotation=30, ha="right")
    fig.tight_layout()
    plt.close(fig)
    return fig
