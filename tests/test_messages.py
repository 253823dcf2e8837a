"""labhelpers.messages: exact filters for the few unavoidable library messages."""

from __future__ import annotations

import logging
import warnings

from labhelpers import messages

BNB = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure ..."


def _stderr(text):
    return {"output_type": "stream", "name": "stderr", "text": text}


def test_the_bitsandbytes_hub_kernel_message_is_dropped_and_nothing_else(caplog):
    messages.install()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_install_is_idempotent():
    messages.install()
    messages.install()
    for name, prefix, _ in messages.LOG_FILTERS:
        assert sum(getattr(f, "prefix", None) == prefix for f in logging.getLogger(name).filters) == 1


def test_only_the_exact_deprecation_message_is_ignored():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        messages.install()
        message = ("`is_gradient_checkpointing` is deprecated and will be removed in v6. "
                   "Use `is_activation_checkpointing` instead.")
        warnings.warn_explicit(message, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                               "training_args.py", 1, module="transformers.training_args")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="mypackage.mine")
    assert [(str(w.message)[:26], w.filename) for w in seen] == [
        ("`gradient_checkpointing` i", "training_args.py"), ("`is_gradient_checkpointing", "mine.py")]


def test_every_filter_and_allowance_says_why():
    from labhelpers.harness.audit import ALLOWED_STDERR

    for entry in messages.LOG_FILTERS + messages.WARNING_FILTERS + ALLOWED_STDERR:
        assert len(entry[-1]) > 8, entry
    assert len(messages.LOG_FILTERS) + len(messages.WARNING_FILTERS) + len(ALLOWED_STDERR) <= 6, "keep the list short"
