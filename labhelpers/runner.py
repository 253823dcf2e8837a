"""Run every lab notebook on the current profile, in a fresh kernel each, and print a per-lab summary.

    python -m labhelpers.runner                 # all labs in labs/, LABS_PROFILE (default smoke)
    python -m labhelpers.runner --labs 00 03    # a subset, by number

Each executed notebook is saved (with its outputs) under ``outputs/<profile>/executed/`` so an
instructor can open what ran; the committed notebooks in ``labs/`` stay output-free. A JSON summary
goes to ``outputs/<profile>/run_summary.json``. The exit status is non-zero if any lab failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .profiles import profile

BUDGET_S = 90.0  # the smoke profile's per-notebook budget on a 2-core CPU (issue #5/#6/#9)


def labs_dir() -> Path:
    """The ``labs/`` folder next to this package (a source checkout)."""
    return Path(__file__).resolve().parent.parent / "labs"


def find_labs(selected: list[str] | None = None) -> list[Path]:
    """Notebooks in ``labs/`` in order; ``selected`` filters by number prefix ("03") or name."""
    books = sorted(labs_dir().glob("[0-9][0-9]_*.ipynb"))
    if selected:
        books = [b for b in books if any(b.name.startswith(s) or b.stem == s for s in selected)]
        if not books:
            raise SystemExit(f"no lab matches {selected}; labs are: {[b.stem for b in sorted(labs_dir().glob('*.ipynb'))]}")
    return books


def run_lab(path: Path, out_dir: Path, timeout: int = 1200) -> dict:
    """Execute one notebook top to bottom in a fresh kernel; return status, wall time and the error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from traitlets.config import Config

    from .quiet import notebook_stderr

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
    try:
        client.execute()
        status = "ok"
        noise = notebook_stderr(nb)
        if noise:
            status = "FAILED"
            error = (f"{len(noise)} unexplained stderr line(s), first in cell {noise[0][0]}: {noise[0][1][:200]} "
                     "(fix it at its source, or add the exact message to labhelpers/quiet.py with why)")
    except CellExecutionError as exc:
        status = "FAILED"
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    except Exception as exc:  # noqa: BLE001 - a dead kernel or timeout is a failed lab, not a crash
        status = "FAILED"
        error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    wall = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return {"lab": path.stem, "status": status, "wall_s": round(wall, 1), "error": error}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``spark-labs`` / ``python -m labhelpers.runner``)."""
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
        print(f"   {row['status']} in {row['wall_s']:.1f} s {row['error']}", flush=True)

    total = sum(r["wall_s"] for r in rows)
    print(f"\nSummary ({lab.name} profile, model {lab.model}):")
    print(f"{'lab':<28}{'status':<8}{'wall s':>8}")
    for r in rows:
        over = "  (over the 90 s smoke budget)" if lab.is_smoke and r["wall_s"] > BUDGET_S else ""
        print(f"{r['lab']:<28}{r['status']:<8}{r['wall_s']:>8.1f}{over}")
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{'total':<36}{total:>8.1f}\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    summary = {"profile": lab.name, "model": lab.model, "labs": rows, "total_s": round(total, 1),
               "python": sys.executable, "hf_offline": os.environ.get("HF_HUB_OFFLINE", "")}
    (lab.output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
