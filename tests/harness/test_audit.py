"""labhelpers.harness.audit: every stderr line an executed lab printed is explained, or the lab fails."""

from __future__ import annotations

import nbformat

from labhelpers.harness import audit


def _stderr(text):
    return {"output_type": "stream", "name": "stderr", "text": text}


def test_unexplained_stderr_keeps_warnings_and_drops_allowed_lines():
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "Self-check passed\n"},
        _stderr("\n"),
        _stderr("[transformers] return_assistant_tokens_mask==True but chat template does not contain "
                "`{% generation %}` keyword.\n"),
        _stderr("/tmp/ipykernel_1/2.py:3: TRLExperimentalWarning: You are importing from 'trl.experimental'. APIs "
                "here are unstable and may change or be removed without notice. Silence this warning by setting "
                "environment variable TRL_EXPERIMENTAL_SILENCE=1.\n  from trl.experimental.cpo import CPOConfig\n"),
        _stderr(["/x/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated\n",
                 "  warnings.warn(\n"]),
    ]
    assert audit.unexplained_stderr(outputs) == [
        "/x/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated", "  warnings.warn("]


def test_notebook_stderr_names_the_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: pin_memory\n")]
    assert audit.notebook_stderr(nb) == [(2, "UserWarning: pin_memory")]


def test_the_runner_fails_a_lab_that_prints_an_unexplained_warning(tmp_path):
    """The main job reads each executed notebook: a warning nobody explained fails the lab, naming the cell."""
    from labhelpers.harness.runner import run_lab

    labs = tmp_path / "labs"
    labs.mkdir()
    nb = nbformat.v4.new_notebook()
    passed = "import labhelpers as lh\nlh.print_self_check('held-out loss', 4.6, 2.5)"  # what a lab ends with
    nb.cells = [nbformat.v4.new_code_cell(passed),
                nbformat.v4.new_code_cell("import warnings\nwarnings.warn('pin_memory is set but no accelerator')")]
    nbformat.write(nb, labs / "98_noisy.ipynb")
    nb.cells = nb.cells[:1]
    nbformat.write(nb, labs / "99_audit.ipynb")
    noisy = run_lab(labs / "98_noisy.ipynb", tmp_path / "executed", timeout=60)
    assert noisy["status"] == "FAILED", noisy
    assert (noisy["error"].startswith("2 unexplained stderr line(s), first in cell 1: ")
            and "pin_memory" in noisy["error"])
    assert (tmp_path / "executed" / "98_noisy.ipynb").is_file()
    quiet_row = run_lab(labs / "99_audit.ipynb", tmp_path / "executed", timeout=60)
    assert quiet_row["status"] == "ok" and quiet_row["error"] == "", quiet_row


def test_nbval_fails_a_notebook_cell_that_prints_an_unexplained_warning():
    """The root conftest.py hook reaches notebook cells (a hook in tests/conftest.py would not reach labs/)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    folder = root / "tests" / "_nbval_probe"
    folder.mkdir(exist_ok=True)
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("print('fine')"),
                    nbformat.v4.new_code_cell("import warnings\nwarnings.warn('pin_memory is set but no accelerator')")]
        nbformat.write(nb, folder / "noisy.ipynb")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                               str(folder / "noisy.ipynb")], cwd=root, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 failed, 1 passed" in proc.stdout and "stderr line(s) a learner would read unexplained" in proc.stdout
    assert "pin_memory is set but no accelerator" in proc.stdout
