"""labhelpers: the few verbs the Spark fine-tuning labs call.

One module per job; names are imported lazily so ``import labhelpers`` stays fast and a lab that
never exports a GGUF never imports llama.cpp.

    profiles    profile(), Profile, resolve_model()          smoke vs full, LABS_PROFILE / LABS_MODEL
    embedded    embedded_model_dir()                          the offline SmolLM2-135M smoke model
    models      load_model(), load_tokenizer(), generate()
    memory      memory_report(), track_memory()                 memory measured
    planning    plan_memory(), plot_memory()                    memory predicted, per rank too (world_size)
    capacity    preflight(), sparks_needed()                    refuse what cannot fit; how many Sparks a run needs
    distributed write_accelerate_config(), launch_command()     `python -m labhelpers.distributed`: one recipe, N processes
    disk        check_disk_space()                            refuse to write what the disk cannot hold
    storage     disk_plan()                                   what the full profile downloads and writes
    data        load_lab_dataset(), describe(), preference_to_kto()
    task        the checkable answer format the datasets teach (format_ok(), task_metrics())
    schedules   schedule()                                     epochs over the shipped rows -> steps (full profile)
    estimate    estimate_time(), estimate_grpo_time()         training time from the plan, before a run
    training    TRL config presets, live-plot / tokens-per-second / NaN-guard callbacks, resume
    evaluation  heldout_loss(), preference_metrics(), side_by_side(), sample_groups()
    results     save_result(), load_results(), plot_results()  the cross-method comparison (preference_table())
    selfcheck   self_check_passed()                           the closing line every lab prints
                stop_lab()                                    or the reason it cannot go on here
    export      merge_adapter(), export_gguf(), quantize_gguf(), write_modelfile(), verify_gguf(), ollama_*
    envcheck    the checks of lab 00
    runner      `python -m labhelpers.runner`: every lab on the current profile, with a summary
    report      the instructor's per-lab table and report.md, from the executed notebooks
    native      run_isolated(): llama.cpp in a child process, so its crash never kills the kernel
    quiet       the exact library messages filtered, and the stderr check of executed notebooks
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from . import quiet as _quiet  # noqa: E402

_quiet.install()  # the few exact library messages a learner need not read (see quiet.py)

_EXPORTS: dict[str, str] = {
    # profiles / embedded
    "profile": "profiles",
    "Profile": "profiles",
    "ProfileError": "profiles",
    "resolve_model": "profiles",
    "with_overrides": "profiles",
    "embedded_model_dir": "embedded",
    # models
    "load_model": "models",
    "load_tokenizer": "models",
    "generate": "models",
    "count_parameters": "models",
    # memory
    "memory_report": "memory",
    "track_memory": "memory",
    "plan_memory": "planning",
    "plot_memory": "planning",
    "preflight": "capacity",
    "sparks_needed": "capacity",
    "PreflightError": "capacity",
    "disk_plan": "storage",
    # schedule / time estimate
    "schedule": "schedules",
    "estimate_time": "estimate",
    "estimate_grpo_time": "estimate",
    # data / task
    "load_lab_dataset": "data",
    "describe": "data",
    "preference_to_kto": "data",
    "DataValidationError": "data",
    "format_ok": "task",
    "task_metrics": "task",
    # training / evaluation / results
    "heldout_loss": "evaluation",
    "preference_metrics": "evaluation",
    "side_by_side": "evaluation",
    "sample_groups": "evaluation",
    "save_result": "results",
    "load_results": "results",
    "plot_results": "results",
    "self_check_passed": "selfcheck",
    "stop_lab": "selfcheck",
    "sft_config": "training",
    "dpo_config": "training",
    "simpo_config": "training",
    "orpo_config": "training",
    "kto_config": "training",
    "grpo_config": "training",
    "lab03_adapter": "training",
    "lora_config": "training",
    "train": "training",
    "as_prompt_completion": "training",
    "with_lengths": "training",
    "LivePlotCallback": "callbacks",
    "ThroughputCallback": "callbacks",
    "NanGuardCallback": "callbacks",
    "EmbeddingNoiseProbe": "callbacks",
    # export
    "merge_adapter": "export",
    "export_gguf": "export",
    "quantize_gguf": "export",
    "write_modelfile": "export",
    "verify_gguf": "export",
    "ollama_create": "export",
    "ollama_chat": "export",
    "ollama_available": "export",
    "OllamaUnavailable": "export",
    "gguf_summary": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labhelpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
