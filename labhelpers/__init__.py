"""labhelpers: the verbs the Spark fine-tuning labs call, as ``import labhelpers as lh``.

Every name a lab uses is ``lh.<name>`` (``lh.__all__``); the toolboxes of one lab are namespaces:
``lh.envcheck`` (lab 00), ``lh.deploy`` (lab 10), ``lh.distributed`` (lab 11). Names are imported lazily, so
``import labhelpers`` stays fast and a lab that never exports a GGUF never imports llama.cpp. Each module
holds one job; ``harness/`` runs and reports on the labs and is imported by none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from labhelpers import messages as _messages

__version__ = "0.1.0"

_messages.install()  # the few exact library messages a learner need not read (see messages.py)

_MODULES: dict[str, tuple[str, ...]] = {
    "profiles": ("profile", "Profile", "ProfileError", "resolve_model", "with_overrides", "embedded_model_dir",
                 "GRPO_FULL"),
    "models": ("load_model", "load_tokenizer", "generate", "count_parameters"),
    "arch": ("arch_spec", "KNOWN_CONFIGS"),
    "memory": ("report_memory", "track_memory", "saved_activation_bytes", "plan_memory", "plot_memory",
               "preflight", "PreflightError", "sparks_needed"),
    "disk": ("plan_disk",),
    "schedules": ("schedule", "estimate_time", "estimate_grpo_time"),
    "data": ("load_lab_dataset", "describe_dataset", "preference_to_kto", "DataValidationError", "DATASET_KINDS",
             "LENGTH_RATIO_RANGE", "data_path", "check_no_overlap", "prompt_messages"),
    "task": ("format_ok", "task_metrics", "expected_labs", "reference_answer", "cited_lab", "LAB_NAMES"),
    "training": ("sft_config", "dpo_config", "simpo_config", "orpo_config", "kto_config", "grpo_config",
                 "lora_config", "SIMPO_BETA", "SIMPO_GAMMA", "train", "last_checkpoint", "lab03_adapter",
                 "as_prompt_completion", "with_lengths"),
    "callbacks": ("LivePlotCallback", "ThroughputCallback", "NanGuardCallback", "EmbeddingNoiseProbe"),
    "evaluation": ("chat_tokens", "token_logps", "heldout_loss", "completion_logps", "preference_pairs",
                   "preference_metrics", "side_by_side", "sample_groups"),
    "preference": ("load_starting_model", "score_heldout", "compare_heldout", "count_passes"),
    "sft": ("score_sft", "compare_sft"),
    "results": ("save_result", "load_results", "plot_results", "PREFERENCE_LABS", "preference_rows",
                "preference_table", "preference_findings"),
    "selfcheck": ("print_self_check", "stop_lab"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
NAMESPACES = ("envcheck", "deploy", "distributed")

__all__ = sorted([*_EXPORTS, *NAMESPACES])


def __getattr__(name: str) -> Any:
    if name in NAMESPACES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        raise AttributeError(f"module 'labhelpers' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
