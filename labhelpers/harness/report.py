"""The instructor's report: one row per lab from its executed notebook, printed and written as report.md.

Every figure comes from the run itself: status, wall time and peak memory from the runner, the
before -> after figure and the self-check line from what the executed notebook printed
(:mod:`labhelpers.selfcheck`), the failing cell from its error output. The browser check's
screenshots are added when ``outputs/<profile>/screenshots/browser_check.json`` exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labhelpers.harness.audit import notebook_stderr
from labhelpers.selfcheck import PREFIX

BROWSER_RESULT = "browser_check.json"  # written by tests/browser/jupyterlab_check.py next to its screenshots
SOURCE_LINES = 4  # first lines of a failing cell shown in the report

_LINE = re.compile(
    r"^Self-check passed: (?P<figure>[^;]*?) (?P<before>\S+) -> (?P<after>[^\s;]+)"
    r"(?: (?P<unit>[^;]+))?(?:; (?P<details>.*))?$"
)


@dataclass(frozen=True)
class SelfCheck:
    """A lab's closing line, split into its headline figure and the rest."""

    line: str
    figure: str = ""
    before: str = ""
    after: str = ""
    unit: str = ""
    details: str = ""

    @property
    def headline(self) -> str:
        """``"held-out loss 2.345 -> 1.234"`` (with its unit), or ``""`` when the line has no figure."""
        if not self.figure:
            return ""
        return f"{self.figure} {self.before} -> {self.after}" + (f" {self.unit}" if self.unit else "")


def parse_self_check(line: str) -> SelfCheck | None:
    """A :class:`SelfCheck` for a ``Self-check passed...`` line (figure empty if it has none); else None."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    match = _LINE.match(line)
    if match is None:
        return SelfCheck(line=line)
    return SelfCheck(line=line, **{k: (v or "").strip() for k, v in match.groupdict().items()})


def find_self_check(nb: Any) -> SelfCheck | None:
    """The last ``Self-check passed`` line a notebook (nbformat, executed) printed to stdout, parsed."""
    found = None
    for cell in nb.cells if hasattr(nb, "cells") else nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                for line in ("".join(text) if isinstance(text, list) else text).splitlines():
                    found = parse_self_check(line) or found
    return found


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def stopped(nb: Any) -> dict[str, Any] | None:
    """Where and why a lab called ``stop_lab`` (the cell, its first lines, the reason); None if it did not."""
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if out.get("output_type") == "error" and out.get("ename") == "LabStopped":
                return {"cell": index, "source": _source(cell).splitlines()[:SOURCE_LINES],
                        "reason": out.get("evalue", "")}
    return None


def failure(nb: Any) -> dict[str, Any] | None:
    """Where an executed notebook went wrong: the first cell with an error output or unexplained stderr."""
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if out.get("output_type") == "error" and out.get("ename") != "LabStopped":
                return {"cell": index, "source": _source(cell).splitlines()[:SOURCE_LINES],
                        "error": f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()}
    noise = notebook_stderr(nb)
    if noise:
        index, line = noise[0]
        return {"cell": index, "source": _source(nb.cells[index]).splitlines()[:SOURCE_LINES],
                "error": f"unexplained stderr ({len(noise)} line(s)): {line[:200]}"}
    return None


def lab_facts(nb: Any) -> dict[str, Any]:
    """The report fields an executed notebook provides: its self-check line and figure, and any failure."""
    check = find_self_check(nb)
    return {
        "figure": check.headline if check else "",
        "self_check": check.line if check else "",
        "failure": failure(nb),
        "stopped": stopped(nb),
    }


def _peak(row: dict[str, Any]) -> str:
    return f"{row['peak_rss_gb']:.2f}" if row.get("peak_rss_gb") is not None else "n/a"


def _failure_lines(row: dict[str, Any]) -> list[str]:
    stop = row.get("stopped")
    if row.get("status") == "stopped" and stop:
        return [f"   stopped in cell {stop['cell']}: {stop['reason']}"]
    fail = row.get("failure")
    if not fail:
        return [f"   error: {row['error']}"] if row.get("error") else []
    lines = [f"   failed in cell {fail['cell']}:"] + [f"   | {line}" for line in fail["source"]]
    return lines + [f"   {fail['error']}"]


def format_table(rows: list[dict[str, Any]], profile: str, model: str, budget_s: float | None = None) -> str:
    """The per-lab table for the terminal: status, wall time, peak memory, figure, then each self-check line."""
    width = max([len(r["lab"]) for r in rows] + [3]) + 2
    out = [f"Summary ({profile} profile, model {model}):",
           f"{'lab':<{width}}{'status':<8}{'wall s':>8}{'peak GB':>9}  before -> after (the self-check's figure)"]
    for r in rows:
        over = f"  (over the {budget_s:.0f} s budget)" if budget_s and r["wall_s"] > budget_s else ""
        out.append(f"{r['lab']:<{width}}{r['status']:<8}{r['wall_s']:>8.1f}{_peak(r):>9}  "
                   f"{r.get('figure') or '-'}{over}")
    failed = [r for r in rows if r["status"] not in ("ok", "stopped")]
    stops = [r for r in rows if r["status"] == "stopped"]
    out.append(f"{'total':<{width + 8}}{sum(r['wall_s'] for r in rows):>8.1f}")
    out.append(f"{len(rows) - len(failed) - len(stops)} passed, {len(failed)} failed"
               + (f", {len(stops)} stopped (stop_lab: see why below)" if stops else ""))
    out.append("\nSelf-check lines:")
    for r in rows:
        out.append(f"{r['lab']}: {r.get('self_check') or '(no Self-check passed line printed)'}")
        if r["status"] != "ok":
            out.extend(_failure_lines(r))
    return "\n".join(out)


def browser_section(screens_dir: Path, relative_to: Path) -> list[str]:
    """report.md lines for the browser check's result and screenshots, or [] if it has not run."""
    result_file = screens_dir / BROWSER_RESULT
    if not result_file.is_file():
        return []
    result = json.loads(result_file.read_text())
    lines = ["", "## In JupyterLab, as a learner sees it", "",
             f"Browser check of {result.get('finished', '?')}: JupyterLab {result.get('jupyterlab', '?')} in headless "
             f"{result.get('browser', 'Chromium')}, Run > Run All Cells, {result.get('wall_s', '?')} s in all.", ""]
    for lab in result.get("labs", []):
        lines.append(f"### {lab['lab']}: {lab['status']}")
        lines.append("")
        if lab.get("self_check"):
            lines.append(f"`{lab['self_check']}`")
            lines.append("")
        for problem in lab.get("problems", []):
            lines.append(f"- {problem}")
        for shot in lab.get("screenshots", []):
            path = screens_dir / shot
            if path.is_file():
                lines.append(f"![{lab['lab']}: {Path(shot).stem}]({path.relative_to(relative_to).as_posix()})")
        lines.append("")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_report(path: Path, summary: dict[str, Any], screens_dir: Path | None = None) -> Path:
    """Write ``report.md``: the run's table, the self-check lines, failures, and the browser check if any."""
    rows = summary["labs"]
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [
        f"# Lab run: {summary['profile']} profile",
        "",
        f"Model `{summary['model']}`, {summary.get('finished', '')}, {summary.get('machine', '')}. "
        f"`{summary.get('command', 'python -m labhelpers.harness.runner')}`: {len(rows) - len(failed)} of {len(rows)} "
        f"labs passed in {summary['total_s']:.0f} s.",
        "",
        "Peak memory: the highest resident memory of the lab's kernel and its child processes.",
        "",
        "| lab | status | wall s | peak GB | before -> after (the self-check's figure) |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['lab']} | {r['status']} | {r['wall_s']:.1f} | {_peak(r)} | {_md(r.get('figure') or '-')} |")
    lines += ["", "## Self-check lines", ""]
    lines += [f"- **{r['lab']}**: {_md(r.get('self_check') or '(none printed)')}" for r in rows]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            fail = r.get("failure")
            lines.append(f"### {r['lab']}" + (f", cell {fail['cell']}" if fail else ""))
            if fail:
                lines += ["", "```python", *fail["source"], "```", "", f"`{fail['error']}`", ""]
            else:
                lines += ["", f"`{r.get('error', '')}`", ""]
    if screens_dir is not None:
        lines += browser_section(screens_dir, path.parent)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
