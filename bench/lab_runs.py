"""Run labs through the runner many times, or with a planted break, and collect what they print.

Two uses, both by hand (never in the test suite):

* **Tolerances from measurement.** ``--runs 20`` runs a lab 20 times (seed ``--seed`` each time unless
  ``--vary-seed``) and prints the largest and smallest value of each figure the lab prints (``FIGURES``), so a
  whole-model tolerance can be set at least 10x the largest difference seen::

      python bench/lab_runs.py --lab 01 --runs 20 --json runs01.json

* **Planted breaks.** ``--break NAME`` copies the project to a temporary folder, applies one break from
  ``BREAKS`` (a text replacement in one file that must match exactly once), runs the labs it needs there
  (``PYTHONPATH`` = the copy, so the kernels import the broken ``labhelpers``), and reports whether the lab that
  teaches the step failed its Self-check and with what message; with ``--tests`` it also runs the unit test that
  must catch the same break. ``--break all`` runs every break, one at a time::

      python bench/lab_runs.py --break all --tests --json breaks.json

Each run gets its own ``LABS_OUTPUT_DIR``; the smoke profile unless ``LABS_PROFILE`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"

# What each lab prints that a tolerance is set from (a regex with one number group, over the lab's stdout).
FIGURES: dict[str, dict[str, str]] = {
    "01": {
        "update_at_init": rf"B @ A at the start: largest \|entry\| {NUMBER}",
        "zero_init_rel": rf"B = 0: max \|logit change\| from the base model [^\n]*?= {NUMBER} of the largest logit",
        "merge_vs_training": rf"merging moved the logits by {NUMBER} of the distance training moved them",
        "loss_shift": rf"\(a shift of {NUMBER} of what training gained\)",
        "held_drop": rf"held-out loss [\d.]+ -> [\d.]+: {NUMBER}% lower",
    },
    "10": {
        "merge_kept": rf"the merged model keeps {NUMBER} of the held-out loss the adapter gained",
    },
}


@dataclass(frozen=True)
class Break:
    """One planted break: replace ``old`` by ``new`` in ``file``; ``labs`` run in order, ``lab`` must fail."""

    file: str
    old: str
    new: str
    lab: str
    labs: tuple[str, ...]
    test: str  # the unit test (pytest node id) that must fail on the same break
    what: str


BREAKS: dict[str, Break] = {
    "merge_skips_adapter": Break(
        "labhelpers/deploy/merge.py",
        "model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload(safe_merge=True)",
        "model = model  # planted break: the adapter is never merged",
        "10", ("10",), "tests/deploy/test_merge.py::test_merged_model_outputs_equal_adapter_model_outputs",
        "the merge writes the base model back"),
    "lr_zero": Break(
        "labhelpers/training.py",
        "        learning_rate=lr,",
        "        learning_rate=0.0,  # planted break",
        "03", ("03",), "tests/test_training.py::test_sft_preset_follows_the_smoke_profile",
        "learning rate 0 in every preset"),
    "pairs_swapped": Break(
        "labhelpers/data.py",
        "    dataset = Dataset.from_list(rows)",
        "    if split == 'train':  # planted break: the training pairs only (the held-out pairs stay right)\n"
        "        rows = [{**r, 'chosen': r['rejected'], 'rejected': r['chosen']} "
        "if 'chosen' in r else r for r in rows]\n"
        "    dataset = Dataset.from_list(rows)",
        "06", ("06",), "tests/test_preference.py::test_loaded_preference_pairs_have_the_well_formed_answer_as_chosen",
        "chosen and rejected swapped in the training pairs"),
    "neftune_off": Break(
        "labhelpers/training.py",
        "def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:\n",
        "def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:\n"
        "    overrides = {k: v for k, v in overrides.items() if k != 'neftune_noise_alpha'}  # planted break\n",
        "04", ("04",), "tests/test_training.py::test_embedding_noise_probe_measures_what_the_trainer_added",
        "neftune_noise_alpha never reaches the trainer"),
    "qlora_unquantized": Break(
        "labhelpers/models.py",
        '    from transformers import BitsAndBytesConfig\n\n    if quantization == "4bit":\n',
        '    from transformers import BitsAndBytesConfig\n\n    if quantization == "4bit":\n'
        '        return None  # planted break: the 4-bit request loads the model unquantized\n',
        "05", ("05",), "tests/test_models.py",
        "QLoRA loads the model unquantized"),
    "template_drops_assistant_header": Break(
        "labhelpers/deploy/ollama.py",
        "    derived = ollama_template(tokenizer, add_bos=add_bos)\n",
        "    derived = ollama_template(tokenizer, add_bos=add_bos)\n"
        "    derived.template = (derived.template or '').replace('<|im_start|>assistant\\n', '')  # planted break\n",
        "10", ("10",), "tests/deploy/test_modelfile.py::test_modelfile_template_reproduces_the_hf_chat_template",
        "the Modelfile TEMPLATE drops the assistant header (SmolLM2's)"),
    "plan_activations_doubled": Break(
        "labhelpers/memory.py",
        "activations=int(activations)",
        "activations=int(2 * activations)",
        "05", ("05",), "tests/test_memory.py::test_activation_estimate_counts_the_tensors_autograd_saves",
        "the memory plan counts activations twice"),
    "kto_labels_inverted": Break(
        "labhelpers/data.py",
        "    dataset = Dataset.from_list(rows)",
        "    rows = [{**r, 'label': not r['label']} if 'label' in r else r for r in rows]\n"
        "    dataset = Dataset.from_list(rows)",
        "09", ("06", "07", "08", "09"),
        "tests/test_preference.py::test_loaded_kto_rows_label_the_well_formed_answers_desirable",
        "KTO's thumbs up and down inverted when the rows load"),
    "lora_init_not_zero": Break(
        "labs/01_lora_from_scratch.ipynb",
        "self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device))",
        "self.lora_B = nn.Parameter(torch.randn(base.out_features, r, device=device) * 0.02)",
        "01", ("01",), "", "B starts random instead of zero (LoRA no longer starts as a no-op)"),
    "merge_bf16": Break(
        "labs/01_lora_from_scratch.ipynb",
        "model = lh.load_model()",
        "model = lh.load_model(dtype=torch.bfloat16)",
        "", ("01",), "", "not a break: lab 01 with the model in bf16 on the CPU (the merge tolerance in bf16)"),
}


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def _apply(tree: Path, brk: Break) -> None:
    path = tree / brk.file
    text = path.read_text()
    old, new = brk.old, brk.new
    if path.suffix == ".ipynb":  # the notebook's JSON escapes quotes in sources
        old, new = json.dumps(old)[1:-1], json.dumps(new)[1:-1]
    if text.count(old) != 1:
        raise SystemExit(f"break {brk.file}: the text to replace occurs {text.count(old)} times, not once: {brk.old!r}")
    path.write_text(text.replace(old, new))


def _stdout(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    text = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
    return "".join(text)


def run_labs(tree: Path, labs: tuple[str, ...], seed: int) -> list[dict]:
    """Run labs in order through the runner in ``tree``, in a fresh output folder; their summary rows + stdout."""
    out = Path(tempfile.mkdtemp(prefix="lab-runs-"))
    env = {**os.environ, "PYTHONPATH": str(tree), "LABS_OUTPUT_DIR": str(out), "LABS_SEED": str(seed),
           "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "labhelpers.harness.runner", "--labs", *labs], cwd=tree, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    summaries = list(out.glob("*/run_summary.json"))
    if not summaries:
        raise SystemExit(f"the runner wrote no run_summary.json under {out}")
    rows = json.loads(summaries[0].read_text())["labs"]
    for row in rows:
        row["stdout"] = _stdout(summaries[0].parent / "executed" / f"{row['lab']}.ipynb")
    shutil.rmtree(out, ignore_errors=True)
    return rows


def figures(lab: str, stdout: str) -> dict[str, float | None]:
    found = {}
    for name, pattern in FIGURES.get(lab, {}).items():
        match = re.search(pattern, stdout)
        found[name] = float(match.group(1)) if match else None
    return found


def repeat(lab: str, runs: int, seed: int, vary: bool, tree: Path = ROOT) -> dict:
    results = []
    for i in range(runs):
        row = run_labs(tree, (lab,), seed + i if vary else seed)[-1]
        results.append({"status": row["status"], "wall_s": row["wall_s"], **figures(lab, row["stdout"])})
        print(f"run {i + 1}/{runs}: {row['status']} {row['wall_s']} s "
              + ", ".join(f"{k}={v}" for k, v in results[-1].items() if k not in ("status", "wall_s")), flush=True)
    summary = {}
    for name in FIGURES.get(lab, {}):
        values = [r[name] for r in results if r[name] is not None]
        summary[name] = {"n": len(values), "min": min(values, default=None), "max": max(values, default=None)}
        print(f"{name}: {len(values)} runs, min {summary[name]['min']}, max {summary[name]['max']}")
    return {"lab": lab, "runs": results, "summary": summary}


def in_process(lab: str, runs: int, seed: int, vary: bool, names: list[str], until: str = "self-check",
               replace: list[str] | None = None) -> dict:
    """Run a lab's code cells with exec in this process, ``runs`` times, and collect variables by name.

    Faster than the runner for many repeats (one interpreter, imports once); the cells run up to the markdown
    heading that contains ``until`` (the Self-check), so the asserts do not stop a run whose values are wanted.
    """
    import matplotlib

    matplotlib.use("Agg")
    path = next((ROOT / "labs").glob(f"{lab}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    code = []
    for cell in cells:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and until in text.lower() and text.lstrip().startswith("#"):
            break
        if cell["cell_type"] == "code":
            code.append("\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))))
    for old, new in zip((replace or [])[::2], (replace or [])[1::2], strict=True):  # a variant of the lab's code
        if sum(c.count(old) for c in code) != 1:
            raise SystemExit(f"--replace: {old!r} does not occur exactly once in the lab's code")
        code = [c.replace(old, new) for c in code]
    os.chdir(path.parent)
    results = []
    for i in range(runs):
        os.environ["LABS_SEED"] = str(seed + i if vary else seed)
        os.environ.setdefault("LABS_OUTPUT_DIR", tempfile.mkdtemp(prefix="lab-runs-"))
        namespace: dict = {"__name__": "__main__"}
        for source in code:
            exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - the lab's own code
        row = {n: float(namespace[n]) for n in names}
        results.append(row)
        print(f"run {i + 1}/{runs}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
    summary = {n: {"n": runs, "min": min(r[n] for r in results), "max": max(r[n] for r in results)} for n in names}
    for n, v in summary.items():
        print(f"{n}: {runs} runs, min {v['min']:.4g}, max {v['max']:.4g}")
    return {"lab": lab, "in_process": True, "runs": results, "summary": summary}


def planted(name: str, with_test: bool, seed: int) -> dict:
    brk = BREAKS[name]
    with tempfile.TemporaryDirectory(prefix=f"break-{name}-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        _apply(tree, brk)
        rows = run_labs(tree, brk.labs, seed)
        target = next(r for r in rows if r["lab"].startswith(brk.lab)) if brk.lab else rows[-1]
        failure = target.get("failure") or {}
        result = {"break": name, "what": brk.what, "lab": target["lab"], "status": target["status"],
                  "message": failure.get("error") or target.get("error") or target.get("self_check", ""),
                  **figures(target["lab"][:2], target["stdout"])}
        if with_test and brk.test:
            test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", brk.test],
                                  cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"},
                                  capture_output=True, text=True)
            lines = test.stdout.splitlines()
            failed = [line for line in lines if line.startswith("FAILED")]
            errors = [line[1:].strip() for line in lines if line.startswith("E ")]  # pytest's "E   ..." lines
            result["unit_test"] = {"node": brk.test, "failed": test.returncode != 0, "first_failure": failed[:1],
                                   "first_error": errors[:1]}
    print(json.dumps(result, indent=1), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", help="lab number to repeat (with --runs)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vary-seed", action="store_true", help="seed, seed+1, ... instead of the same seed")
    parser.add_argument("--break", dest="brk", help=f"one of {', '.join(BREAKS)}, or all")
    parser.add_argument("--tests", action="store_true", help="also run the unit test that must catch the break")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--in-process", nargs="+", metavar="VAR",
                        help="exec the lab's cells up to its Self-check in this process and collect these variables")
    parser.add_argument("--replace", nargs="+", metavar="TEXT", help="with --in-process: OLD NEW pairs in the code")
    parser.add_argument("--until", default="self-check",
                        help="with --in-process: stop at the first markdown heading containing this (lower case)")
    args = parser.parse_args(argv)
    if args.brk and args.runs > 1:  # a variant run many times (e.g. merge_bf16: the tolerance in bf16)
        with tempfile.TemporaryDirectory(prefix=f"variant-{args.brk}-") as tmp:
            _copy_tree(Path(tmp))
            _apply(Path(tmp), BREAKS[args.brk])
            lab = args.lab or BREAKS[args.brk].labs[-1]
            result: object = repeat(lab, args.runs, args.seed, args.vary_seed, Path(tmp))
    elif args.brk:
        names = [n for n, b in BREAKS.items() if b.lab] if args.brk == "all" else [args.brk]
        result = [planted(n, args.tests, args.seed) for n in names]
    elif args.lab and args.in_process:
        result = in_process(args.lab, args.runs, args.seed, args.vary_seed, args.in_process, until=args.until.lower(),
                            replace=args.replace)
    elif args.lab:
        result = repeat(args.lab, args.runs, args.seed, args.vary_seed)
    else:
        parser.error("give --lab (with --runs) or --break")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
