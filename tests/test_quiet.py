"""labhelpers.quiet: exact filters for the few unavoidable library messages, and the stderr check of labs."""

from __future__ import annotations

import logging
import warnings

import nbformat

from labhelpers import quiet

BNB = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure ..."


def _stderr(text):
    return {"output_type": "stream", "name": "stderr", "text": text}


def test_the_bitsandbytes_hub_kernel_message_is_dropped_and_nothing_else(caplog):
    quiet.install()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_install_is_idempotent():
    quiet.install()
    quiet.install()
    for name, prefix, _ in quiet.LOG_FILTERS:
        assert sum(getattr(f, "prefix", None) == prefix for f in logging.getLogger(name).filters) == 1


def test_only_the_exact_deprecation_message_is_ignored():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.install()
        message = ("`is_gradient_checkpointing` is deprecated and will be removed in v6. "
                   "Use `is_activation_checkpointing` instead.")
        warnings.warn_explicit(message, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                               "training_args.py", 1, module="transformers.training_args")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="mypackage.mine")
    assert [(str(w.message)[:26], w.filename) for w in seen] == [
        ("`gradient_checkpointing` i", "training_args.py"), ("`is_gradient_checkpointing", "mine.py")]


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
    assert quiet.unexplained_stderr(outputs) == [
        "/x/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated", "  warnings.warn("]


def test_notebook_stderr_names_the_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: pin_memory\n")]
    assert quiet.notebook_stderr(nb) == [(2, "UserWarning: pin_memory")]


def test_every_filter_and_allowance_says_why():
    for entry in quiet.LOG_FILTERS + quiet.WARNING_FILTERS + quiet.ALLOWED_STDERR:
        assert len(entry[-1]) > 8, entry
    assert len(quiet.LOG_FILTERS) + len(quiet.WARNING_FILTERS) + len(quiet.ALLOWED_STDERR) <= 6, "keep the list short"


def test_the_runner_fails_a_lab_that_prints_an_unexplained_warning(tmp_path):
    """The main job reads each executed notebook: a warning nobody explained fails the lab, naming the cell."""
    from labhelpers.runner import run_lab

    labs = tmp_path / "labs"
    labs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('fine')"),
                nbformat.v4.new_code_cell("import warnings\nwarnings.warn('pin_memory is set but no accelerator')")]
    nbformat.write(nb, labs / "98_noisy.ipynb")
    nb.cells = nb.cells[:1]
    nbformat.write(nb, labs / "99_quiet.ipynb")
    noisy = run_lab(labs / "98_noisy.ipynb", tmp_path / "executed", timeout=60)
    assert noisy["status"] == "FAILED", noisy
    assert noisy["error"].startswith("2 unexplained stderr line(s), first in cell 1: ") and "pin_memory" in noisy["error"]
    assert (tmp_path / "executed" / "98_noisy.ipynb").is_file()
    quiet_row = run_lab(labs / "99_quiet.ipynb", tmp_path / "executed", timeout=60)
    assert quiet_row["status"] == "ok" and quiet_row["error"] == "", quiet_row
