"""Run every lab notebook on the current profile, in a fresh kernel each, and print a per-lab summary.

    python -m labhelpers.harness.runner                 # all labs in labs/, LABS_PROFILE (default smoke)
    python -m labhelpers.harness.runner --labs 00 03    # a subset, by number

Each executed notebook is saved (with its outputs) under ``outputs/<profile>/executed/`` so an
instructor can open what ran; the committed notebooks in ``labs/`` stay output-free. Per lab it prints
and records status, wall time, peak memory, the before -> after figure and the self-check line the lab
printed (and on a failure, the failing cell's first lines and its error): ``outputs/<profile>/report.md``
(with the browser check's screenshots when that has run) and ``run_summary.json``. The exit status is
non-zero if any lab failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from labhelpers.harness import report
from labhelpers.profiles import profile

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes
BUDGET_S = 90.0  # the smoke profile's per-notebook budget on a 2-core CPU (issue #5/#6/#9)


def labs_dir() -> Path:
    """The ``labs/`` folder next to this package (a source checkout)."""
    return Path(__file__).resolve().parents[2] / "labs"


def find_labs(selected: list[str] | None = None) -> list[Path]:
    """Notebooks in ``labs/`` in order; ``selected`` filters by number prefix ("03") or name."""
    books = sorted(labs_dir().glob("[0-9][0-9]_*.ipynb"))
    if selected:
        books = [b for b in books if any(b.name.startswith(s) or b.stem == s for s in selected)]
        if not books:
            raise SystemExit(f"no lab matches {selected}; "
                             f"labs are: {[b.stem for b in sorted(labs_dir().glob('*.ipynb'))]}")
    return books


class PeakMemory:
    """Samples the resident memory of this process's children (the kernel and what it starts) in a thread.

    The peak is the highest sum seen, or a child's own high-water mark (Linux ``VmHWM``) if higher, so a
    spike between two samples still counts.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _hwm(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def sample(self) -> None:
        """Take one sample now."""
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            try:
                total += child.memory_info().rss
                self.peak = max(self.peak, self._hwm(child.pid))
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_lab(path: Path, out_dir: Path, timeout: int = 1200) -> dict:
    """Execute one notebook top to bottom in a fresh kernel; return its report row (see labhelpers.harness.report)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from traitlets.config import Config

    from labhelpers.harness.audit import notebook_stderr

    nb = nbformat.read(path, as_version=4)
    # The kernel talks to the runner over local IPC sockets in a private folder, not TCP (which ipykernel
    # warns about: plain text on a network port).
    sockets = Path(tempfile.mkdtemp(prefix="labs-kernel-"))
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(sockets / "kernel")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}, config=config
    )
    start = time.perf_counter()
    error = ""
    memory = PeakMemory()
    try:
        with memory:
            client.execute()
        status = "ok"
        noise = notebook_stderr(nb)
        if noise:
            status = "FAILED"
            error = (f"{len(noise)} unexplained stderr line(s), first in cell {noise[0][0]}: {noise[0][1][:200]} "
                     "(fix it at its source, or add the exact message to labhelpers/messages.py with why)")
    except CellExecutionError as exc:
        status = "stopped" if getattr(exc, "ename", "") == "LabStopped" else "FAILED"  # stop_lab(reason)
        text = ANSI.sub("", str(exc)).strip()  # the kernel's traceback is coloured; the report is plain text
        error = text.splitlines()[-1] if text else repr(exc)
    except Exception as exc:  # noqa: BLE001 - a dead kernel or timeout is a failed lab, not a crash
        status = "FAILED"
        error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    wall = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    facts = report.lab_facts(nb)
    if status == "ok" and not facts["self_check"]:
        status, error = "FAILED", "ran to the end without printing its 'Self-check passed' line"
    if status == "ok":
        facts["failure"] = None
    peak = round(memory.peak / 1e9, 2) if memory.peak else None
    return {"lab": path.stem, "status": status, "wall_s": round(wall, 1), "peak_rss_gb": peak, "error": error, **facts}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``spark-labs`` / ``python -m labhelpers.harness.runner``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="*", help="lab numbers or names (default: all)")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)

    lab = profile()
    books = find_labs(args.labs)
    out_dir = lab.output_dir / "executed"
    print(f"\nRunning {len(books)} lab(s); executed copies go to {out_dir}\n", flush=True)
    rows = []
    for book in books:
        print(f"-> {book.stem} ...", flush=True)
        row = run_lab(book, out_dir, timeout=args.timeout)
        rows.append(row)
        print(f"   {row['status']} in {row['wall_s']:.1f} s, peak {row['peak_rss_gb']} GB  "
              f"{row['figure'] or row['error']}", flush=True)

    print()
    print(report.format_table(rows, lab.name, lab.model, BUDGET_S if lab.is_smoke else None))
    total = sum(r["wall_s"] for r in rows)
    summary = {"profile": lab.name, "model": lab.model, "labs": rows, "total_s": round(total, 1),
               "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
               "command": "python -m labhelpers.harness.runner"
                          + (f" --labs {' '.join(args.labs)}" if args.labs else ""),
               "python": sys.executable, "hf_offline": os.environ.get("HF_HUB_OFFLINE", "")}
    (lab.output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
    written = report.write_report(lab.output_dir / "report.md", summary, lab.output_dir / "screenshots")
    print(f"\nreport: {written}")
    return 1 if any(r["status"] not in ("ok", "stopped") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
