"""labhelpers.harness.runner (the instructor's run of every lab) and labhelpers.envcheck (lab 00's checks).

The runner runs on three throwaway notebooks in tmp_path (a real kernel each, a few seconds), never on
the real labs; the environment checks on fakes where the real answer depends on the machine.
"""

from __future__ import annotations

import json
import types

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labhelpers import envcheck
from labhelpers.harness import runner

PASSED = "import labhelpers as lh\nlh.print_self_check('held-out loss', {before}, {after})"


def _write(folder, name, *sources):
    nb = new_notebook()
    nb.cells = [new_code_cell(src) for src in sources]
    nbformat.write(nb, folder / f"{name}.ipynb")


# ------------------------------------------------------------------------------------------- runner
def test_a_failing_lab_is_reported_with_its_cell_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    labs = tmp_path / "labs"
    labs.mkdir()
    _write(labs, "01_first", PASSED.format(before=2.0, after=1.5))
    _write(labs, "02_broken", "x = 1", "assert x == 2, 'held-out loss did not fall'", PASSED.format(before=1, after=0))
    _write(labs, "03_last", PASSED.format(before=4.25, after=3.0))
    _write(labs, "04_not_selected", "raise SystemExit('must not run')")
    monkeypatch.setattr(runner, "labs_dir", lambda: labs)
    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("LABS_PROFILE", "smoke")
    monkeypatch.delenv("LABS_MODEL", raising=False)

    assert runner.main(["--labs", "01", "02", "03", "--timeout", "60"]) == 1  # one lab failed: non-zero exit

    out = capsys.readouterr().out
    assert "-> 03_last ..." in out, "the run stopped at the failing lab"
    assert "2 passed, 1 failed" in out
    assert "   failed in cell 1:\n   | assert x == 2, 'held-out loss did not fall'" in out
    assert "AssertionError: held-out loss did not fall" in out
    summary = json.loads((tmp_path / "out" / "smoke" / "run_summary.json").read_text())
    rows = {row["lab"]: row for row in summary["labs"]}
    assert list(rows) == ["01_first", "02_broken", "03_last"]
    assert [rows[name]["status"] for name in rows] == ["ok", "FAILED", "ok"]
    assert rows["01_first"]["figure"] == "held-out loss 2.000 -> 1.500"
    assert rows["03_last"]["self_check"] == "Self-check passed: held-out loss 4.250 -> 3.000"
    assert rows["02_broken"]["failure"]["cell"] == 1 and rows["02_broken"]["self_check"] == ""
    assert rows["02_broken"]["error"].endswith("AssertionError: held-out loss did not fall")
    assert rows["01_first"]["failure"] is None
    assert summary["total_s"] == pytest.approx(sum(row["wall_s"] for row in rows.values()), abs=0.2)
    assert summary["command"] == "python -m labhelpers.harness.runner --labs 01 02 03"
    assert (summary["profile"], summary["model"]) == ("smoke", "embedded")
    executed = tmp_path / "out" / "smoke" / "executed"
    assert sorted(p.name for p in executed.iterdir()) == ["01_first.ipynb", "02_broken.ipynb", "03_last.ipynb"]
    report = (tmp_path / "out" / "smoke" / "report.md").read_text()
    assert "02_broken" in report and "held-out loss did not fall" in report


def test_find_labs_selects_by_number_or_name_and_names_the_labs_when_none_matches(tmp_path, monkeypatch):
    for name in ("00_check", "01_lora", "10_deploy"):
        _write(tmp_path, name, "pass")
    (tmp_path / "notes.ipynb").write_text("{}")  # not a lab: no number
    monkeypatch.setattr(runner, "labs_dir", lambda: tmp_path)
    assert [p.stem for p in runner.find_labs()] == ["00_check", "01_lora", "10_deploy"]
    assert [p.stem for p in runner.find_labs(["10", "00_check"])] == ["00_check", "10_deploy"]
    with pytest.raises(SystemExit, match=r"no lab matches \['07'\]; labs are: \['00_check', '01_lora', "):
        runner.find_labs(["07"])


# ----------------------------------------------------------------------------------------- envcheck
def test_a_check_line_says_ok_fail_or_note():
    assert str(envcheck.Check("packages", True, "all installed")).startswith("[OK  ] packages")
    assert str(envcheck.Check("packages", False, "missing: trl")).startswith("[FAIL] packages")
    assert str(envcheck.Check("ollama", False, "not installed", required=False)).startswith("[note] ollama")


def test_a_missing_package_fails_the_package_check(monkeypatch):
    real = envcheck.metadata.version

    def version(name):
        if name == "trl":
            raise envcheck.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(envcheck.metadata, "version", version)
    check = envcheck.check_packages()
    assert not check.ok and check.required and check.detail == "missing: trl"
    monkeypatch.setattr(envcheck.metadata, "version", real)
    assert envcheck.check_packages().ok


def test_no_gpu_is_a_note_not_a_failure(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = envcheck.check_device()
    assert check.ok and not check.required and "CPU only" in check.detail


def test_the_disk_check_measures_free_space_against_the_disk_plan(tmp_path, monkeypatch):
    import math

    from labhelpers.disk import plan_disk

    plan_gb = math.ceil(plan_disk().total / 1e9)
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=(plan_gb - 1) * 1e9))
    short = envcheck.check_disk(tmp_path)
    assert not short.ok and not short.required
    assert short.detail == (f"{plan_gb - 1} GB free at {tmp_path} "
                            f"(the full profile's disk plan: {plan_gb} GB; lh.plan_disk())")
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=plan_gb * 1e9))
    assert envcheck.check_disk(tmp_path).ok


def test_bitsandbytes_check_measures_a_real_nf4_round_trip_and_reports_a_failure(monkeypatch):
    check = envcheck.check_bitsandbytes()
    assert check.ok, check.detail
    assert check.before == 4096 * 4 and check.after <= check.before / 8  # 4 bits per 32-bit value
    import bitsandbytes.functional as bnbf

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(bnbf, "quantize_4bit", broken)
    failed = envcheck.check_bitsandbytes()
    assert not failed.ok and failed.required
    assert failed.detail == ("NF4 quantization failed: "
                             "RuntimeError: no kernel image is available for execution on the device")


def test_the_token_check_never_shows_the_token(monkeypatch):
    secret = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", secret)
    check = envcheck.check_hf_token()
    assert check.ok and secret not in str(check) and "configured (value not shown)" in str(check)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    missing = envcheck.check_hf_token()
    assert not missing.ok and not missing.required and "`hf auth login`" in missing.detail


def test_the_ollama_check_tells_missing_from_not_running(monkeypatch):
    from labhelpers.deploy import ollama

    monkeypatch.setattr(envcheck.shutil, "which", lambda name: None)
    absent = envcheck.check_ollama()
    assert not absent.ok and not absent.required and absent.detail.startswith("not installed")
    monkeypatch.setattr(envcheck.shutil, "which", lambda name: "/usr/local/bin/ollama")
    monkeypatch.setattr(ollama, "ollama_available", lambda timeout=1.0: False)
    stopped = envcheck.check_ollama()
    assert not stopped.ok and stopped.detail == "/usr/local/bin/ollama; server not answering: run `ollama serve`"


def test_run_checks_reports_every_check_in_lab_00s_order():
    names = [check.name for check in envcheck.run_checks()]
    assert names == ["packages", "device", "disk", "bitsandbytes 4-bit", "Hugging Face token", "ollama"]


def test_the_runner_finds_every_lab_of_this_checkout_by_default():
    """``python -m labhelpers.harness.runner`` with no argument runs labs/*.ipynb of the checkout it lives in."""
    from pathlib import Path

    labs = sorted((Path(__file__).resolve().parents[2] / "labs").glob("[0-9][0-9]_*.ipynb"))
    assert len(labs) >= 13 and runner.find_labs() == labs
