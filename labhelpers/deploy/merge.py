"""Deployment, step 1: merge a LoRA adapter into its base model (``merge_adapter``).

Two rules shape the merge:

- merge onto a **bf16/fp16/fp32** base, never a 4-bit one: adding the small update to NF4 weights and
  re-quantizing the sum loses much of it, and the result is a bitsandbytes checkpoint that llama.cpp's
  converter cannot read. A QLoRA adapter from lab 05 is merged by reloading its base unquantized;
- never leave a half-written model: the folder is written under a temporary name and renamed, and
  the disk space is checked first (a 70B merge is ~140 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labhelpers.disk import check_disk_space


@dataclass(frozen=True)
class TimedPath:
    """The file or folder a step wrote (``.path``) and how long the step took (``.seconds``); usable as a path."""

    path: Path
    seconds: float

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:  # the path itself: libraries that take a path call str() on it (transformers does)
        return str(self.path)


class Stopwatch:
    """Wall time since it was made: ``clock = Stopwatch()`` as a step starts, ``clock.seconds`` as it ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def done(self, path: str | os.PathLike[str]) -> TimedPath:
        """``path`` with the time since the start: what a step that wrote ``path`` returns."""
        return TimedPath(Path(path), self.seconds)


_FLOAT_DTYPES = ("float16", "bfloat16", "float32")


def estimate_model_bytes(model_path: str | Path, dtype: str = "bfloat16") -> int:
    """Bytes the weights of ``model_path`` take in ``dtype``: parameters counted on the meta device, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    return n_params * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def adapter_base(adapter_dir: str | Path) -> str:
    """The ``base_model_name_or_path`` a peft adapter folder was trained on (from adapter_config.json)."""
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {adapter_dir} is not a peft adapter folder (save_pretrained).")
    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{config}: cannot read field 'base_model_name_or_path' ({err}).") from err
    return str(base)


def adapter_matches(adapter_dir: str | Path, base: str = "model") -> bool:
    """True when ``adapter_dir`` holds a peft adapter trained on ``base`` (``"model"`` = the profile's)."""
    from labhelpers.models import model_path

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        return False
    trained_on = adapter_base(adapter_dir)
    return _same_model(trained_on, model_path(base)) or _same_model(trained_on, base)


def adapter_outdated(adapter_dir: str | Path, sources: Sequence[str | Path] | None = None) -> list[Path]:
    """The code files changed after ``adapter_dir``'s weights were written (empty: the adapter is current).

    ``sources``: files or folders of the code that trains the adapter, by default the ``labhelpers`` package and
    ``labs/03_lora_sft.ipynb`` (whose adapter lab 10 reuses). A missing adapter counts as outdated by every file.
    """
    package = Path(__file__).resolve().parents[1]  # labhelpers/, not only deploy/
    default = [package, package.parent / "labs" / "03_lora_sft.ipynb"]
    paths = [Path(p) for p in sources] if sources is not None else default
    files = [f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p]) if f.is_file()]
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        return files
    written = weights.stat().st_mtime
    return [f for f in files if f.stat().st_mtime > written]


def _same_model(a: str, b: str) -> bool:
    """Same model if the same folder, the same hub id, or a hub-cache snapshot of that id."""

    def norm(name: str) -> str:
        path = Path(name).expanduser()
        if path.exists():
            parts = path.resolve().parts
            for part in parts:  # ~/.cache/huggingface/hub/models--org--name/snapshots/<sha>
                if part.startswith("models--"):
                    return part[len("models--"):].replace("--", "/").lower()
            return str(path.resolve())
        return name.strip().lower()

    return norm(a) == norm(b)


def _checkpoint_dtype(config: Any) -> str:
    """The float dtype a checkpoint is stored in (bf16 when it says nothing usable)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).replace("torch.", "") if dtype is not None else ""
    return name if name in _FLOAT_DTYPES else "bfloat16"


def merge_adapter(
    base: str,
    adapter_dir: str | os.PathLike[str],
    out_dir: str | Path,
    overwrite: bool = False,
    *,
    dtype: str | None = None,
    check_base: bool = True,
) -> TimedPath:
    """Merge a LoRA adapter into an unquantized copy of ``base`` and save safetensors + tokenizer + chat template.

    ``base``: ``"model"``/``"big_model"`` (the profile's), a folder or a hub id. ``dtype``: the
    merged weights' dtype, by default the base checkpoint's own (bf16 for Llama 3.1, fp16 for the
    embedded model). Refuses an existing ``out_dir`` unless ``overwrite``; writes under a temporary
    name and renames, so a crash leaves nothing half-written. Returns ``out_dir`` and the merge's wall time.
    """
    clock = Stopwatch()
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    from labhelpers.models import load_model, model_path

    adapter_dir, out_dir = Path(adapter_dir).expanduser(), Path(out_dir).expanduser()
    trained_on = adapter_base(adapter_dir)
    weights = [adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"]
    if not weights[0].is_file():
        hint = " (a .bin adapter: re-save it with safetensors)" if weights[1].is_file() else ""
        raise FileNotFoundError(f"{weights[0]} not found{hint}: pass the folder adapter.save_pretrained() wrote.")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already exists: pass overwrite=True to replace it, or choose another out_dir.")
    base_path = model_path(base)
    if check_base and not _same_model(base_path, trained_on) and not _same_model(base, trained_on):
        raise ValueError(
            f"{adapter_dir} was trained on {trained_on!r} but base={base!r} resolves to {base_path!r}: merge onto "
            "the model the adapter was trained on (or pass check_base=False if they are the same weights)."
        )
    config = AutoConfig.from_pretrained(base_path)
    quant = getattr(config, "quantization_config", None)
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else getattr(quant, "quant_method", "?")
        raise ValueError(
            f"{base_path} is a pre-quantized checkpoint ({method}): merging into quantized weights loses the "
            "update. Merge onto the original bf16/fp16 model (e.g. meta-llama/Llama-3.1-70B-Instruct for lab 05)."
        )
    dtype = dtype or _checkpoint_dtype(config)
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r}: merge into one of {', '.join(_FLOAT_DTYPES)} (never 4-bit or 8-bit).")

    needed = estimate_model_bytes(base_path, dtype)
    check_disk_space(out_dir.parent, int(needed * 1.05) + 50_000_000, f"Merging {Path(base_path).name} ({dtype})")
    import psutil

    if needed > psutil.virtual_memory().total:
        raise MemoryError(
            f"Merging needs the whole {dtype} model in memory (~{needed / 1e9:.0f} GB) but this machine has "
            f"{psutil.virtual_memory().total / 1e9:.0f} GB: serve the adapter on top of the base instead "
            "(Modelfile `ADAPTER ./adapter`), or merge on a machine with more memory."
        )

    model = load_model(base_path, dtype=getattr(torch, dtype))  # never quantization=...: see module docstring
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload(safe_merge=True)
    has_tok = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir) if has_tok else base_path)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"The tokenizer of {base_path} has no chat template: Ollama could not format chats.")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ValueError(
            f"The tokenizer in {adapter_dir} has {len(tokenizer)} tokens but the model only {rows} embedding rows: "
            "the adapter added tokens without saving the resized embeddings (modules_to_save)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        import peft

        info = {"base": str(base_path), "adapter": str(adapter_dir.resolve()), "dtype": dtype, "peft": peft.__version__}
        (tmp / "MERGED_FROM.json").write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        del model
    if not _same_model(base_path, trained_on):
        warnings.warn(f"Merged onto {base_path} although the adapter names {trained_on} (check_base=False).",
                      stacklevel=2)
    return clock.done(out_dir)
