"""What a learner must not have to read: the few library messages that cannot be fixed at their source.

Each entry is one exact message, with why it cannot be avoided. Everything else a lab prints on
stderr is a defect to fix where it comes from; :mod:`labhelpers.harness.audit` finds it (the runner and
the notebook tests fail on it). ``import labhelpers`` installs the filters, so they apply before the
libraries that emit them are imported.
"""

from __future__ import annotations

import logging

# (logger name, exact start of the message, why it cannot be avoided)
LOG_FILTERS: tuple[tuple[str, str, str], ...] = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        # bitsandbytes 0.50, on CPUs with AVX512-BF16 only: it tries to download an optional kernel
        # from the Hugging Face hub (package `kernels`). The labs never load code from a hub, and the
        # built-in CPU 4-bit path it falls back to works (lab 00 checks that 4-bit really quantizes).
        "optional hub kernel, built-in fallback used",
    ),
)

# (exact message regex, category, module that warns, why it cannot be avoided)
WARNING_FILTERS: tuple[tuple[str, type[Warning], str, str], ...] = (
    (
        r"`is_gradient_checkpointing` is deprecated and will be removed in v6\. "
        r"Use `is_activation_checkpointing` instead\.",
        FutureWarning,
        r"transformers\.modeling_utils",
        # transformers 5.23 renamed the property; peft 0.21.2 (PeftModel.__init__) and TRL 1.16
        # (trl/models/utils.py) still read the old name whenever an adapter is attached. Not our code.
        "peft 0.21.2 and TRL 1.16 read a renamed transformers property",
    ),
)

class _DropExact(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def install() -> None:
    """Attach the exact-message filters of :data:`LOG_FILTERS` and :data:`WARNING_FILTERS` (idempotent)."""
    import warnings

    for message, category, module, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefix, _why in LOG_FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExact) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropExact(prefix))
