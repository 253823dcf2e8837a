"""Memory report, tracking, plan, preflight and plot (no model weights are loaded; all fast)."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from labhelpers.memory import (
    DROP_CACHES,
    NF4_BYTES,
    MemoryPlan,
    PreflightError,
    memory_report,
    plan_memory,
    plot_memory,
    preflight,
    track_memory,
)
from labhelpers.model_configs import KNOWN_CONFIGS, arch_spec

SPARK = 128e9
TINY = dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=256, tie_word_embeddings=False)


def _tiny_lora_model(method: str = "lora", rank: int = 4, targets="all-linear"):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation="sdpa"))
    if method == "full":
        return model, model
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora), model


def _saved_bytes_per_token(model, inner, tokens: torch.Tensor) -> float:
    """Bytes autograd saves inside decoder layer 1 during a forward, per token (parameters excluded)."""
    params = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    kept, seen, inside = [], set(), [False]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if inside[0] and ptr not in params and ptr not in seen and t.dim() > 0:
            seen.add(ptr)
            kept.append(t)
        return None

    layer = inner.model.layers[1]
    pre = layer.register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
    post = layer.register_forward_hook(lambda *a: inside.__setitem__(0, False))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        model(input_ids=tokens, labels=tokens)
    pre.remove(), post.remove()
    nbytes = sum(t.untyped_storage().nbytes() for t in kept)
    cos_sin = 2 * tokens.shape[1] * (TINY["hidden_size"] // TINY["num_attention_heads"]) * 4  # shared by all layers
    return (nbytes - cos_sin) / tokens.numel()


# ------------------------------------------------------------------------------------------ parameters
def test_known_llama_configs_count_published_parameters():
    assert arch_spec("llama-3.1-8b").n_params == pytest.approx(8.03e9, rel=0.01)
    assert arch_spec("llama-3.1-70b").n_params == pytest.approx(70.6e9, rel=0.01)
    assert arch_spec("meta-llama/Llama-3.1-70B-Instruct") == arch_spec("llama-3.1-70b")  # offline alias


def test_parameter_count_equals_transformers_model_exactly(embedded_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    for config in (AutoConfig.from_pretrained(embedded_dir), LlamaConfig(**TINY)):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert arch_spec(config).n_params == model.num_parameters()
    # the same count on a meta-device LlamaForCausalLM built from KNOWN_CONFIGS (slow, so written down)
    assert arch_spec(LlamaConfig(**KNOWN_CONFIGS["llama-3.1-8b"])).n_params == 8_030_261_248
    assert arch_spec("llama-3.1-70b").n_params == 70_553_706_496


def test_config_sources_agree(embedded_dir):
    from_folder = arch_spec(str(embedded_dir))
    from_dict = arch_spec(json.loads((embedded_dir / "config.json").read_text()))
    assert from_folder.n_params == from_dict.n_params == arch_spec("embedded").n_params
    assert from_folder.tied and from_folder.param_counts()["lm_head"] == 0


def test_lora_parameters_match_peft():
    model, _ = _tiny_lora_model(rank=4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert plan_memory(TINY, rank=4).trainable_params == trainable
    assert plan_memory("llama-3.1-8b", rank=16).trainable_params == 41_943_040  # peft's figure for 8B r=16


def test_nf4_bytes_match_bitsandbytes_double_quant():
    import bitsandbytes.functional as bnbf

    weight = torch.randn(1536, 576)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    stored = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
    stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    assert stored / weight.numel() == pytest.approx(NF4_BYTES, rel=1e-3)


# ------------------------------------------------------------------------------------------ plan
def test_lora_bf16_70b_weights_alone_exceed_a_spark_and_qlora_fits():
    lora = plan_memory("llama-3.1-70b", method="lora", dtype="bf16")
    assert lora.weights == pytest.approx(141e9, rel=0.01) and lora.weights > SPARK
    qlora = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True)
    assert 35e9 < qlora.weights < 45e9
    assert qlora.total < 0.6 * SPARK


def test_plan_grows_with_batch_seq_len_and_rank():
    base = plan_memory("llama-3.1-8b")
    assert plan_memory("llama-3.1-8b", batch=2).total > base.total
    assert plan_memory("llama-3.1-8b", seq_len=1024).total > base.total
    assert plan_memory("llama-3.1-8b", rank=64).total > base.total
    doubled = plan_memory("llama-3.1-8b", batch=2)
    assert doubled.activations == pytest.approx(2 * base.activations, rel=1e-6)


def test_gradient_checkpointing_lowers_activations():
    off = plan_memory("llama-3.1-8b", batch=4, seq_len=1024)
    on = plan_memory("llama-3.1-8b", batch=4, seq_len=1024, gradient_checkpointing=True)
    assert on.activations < off.activations / 5 and on.weights == off.weights


def test_optimizer_and_method_change_the_right_components():
    adamw = plan_memory("llama-3.1-8b", method="full")
    eight = plan_memory("llama-3.1-8b", method="full", optimizer="adamw_8bit")
    sgd = plan_memory("llama-3.1-8b", method="full", optimizer="sgd")
    assert adamw.optimizer_states > eight.optimizer_states > sgd.optimizer_states == 0
    assert adamw.gradients == adamw.weights  # bf16 gradient per bf16 weight


@pytest.mark.parametrize("method, dtype, targets", [("lora", "fp32", "all-linear"), ("full", "fp32", "all-linear"),
                                                     ("lora", "fp32", ["q_proj", "v_proj"]),
                                                     ("lora", "bf16", "all-linear")])
def test_activation_estimate_counts_the_tensors_autograd_saves(method, dtype, targets):
    model, inner = _tiny_lora_model(method, rank=4, targets=targets)
    if dtype == "bf16":
        model.to(torch.bfloat16)
        for name, p in model.named_parameters():  # peft keeps adapters in fp32
            if "lora_" in name:
                p.data = p.data.float()
    model.train()
    tokens = torch.randint(0, TINY["vocab_size"], (2, 16))
    measured = _saved_bytes_per_token(model, inner, tokens)
    plan = plan_memory(TINY, method=method, rank=4, dtype=dtype, target_modules=targets, autocast=False,
                       device="cpu")
    assert measured == pytest.approx(plan.details["activation_bytes_per_token_per_layer"], rel=0.02)


def test_plan_table_and_dict():
    plan = plan_memory("llama-3.1-8b", method="qlora")
    assert isinstance(plan, MemoryPlan)
    assert plan.total == sum(plan.breakdown().values())
    assert "total" in plan.table() and "GB" in str(plan) and "weights" in str(plan)
    data = plan.as_dict()
    assert data["total"] == plan.total and json.dumps(data)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="qlora4"), "method='qlora4'"),
    (dict(optimizer="adam"), "optimizer='adam'"),
    (dict(dtype="fp16"), "dtype='fp16'"),
    (dict(batch=0), "batch=0"),
    (dict(target_modules=["lm_head"]), "target_modules=\\['lm_head'\\]"),
    (dict(config_or_model_id="llama-9b"), "config_or_model_id='llama-9b'"),
    (dict(config_or_model_id={"model_type": "gpt2", "n_embd": 768}), "lacks hidden_size"),
])
def test_bad_input_names_the_argument(kwargs, message):
    kwargs = {"config_or_model_id": "llama-3.1-8b", **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_memory(**kwargs)


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        plan_memory(str(tmp_path))


# ------------------------------------------------------------------------------------------ preflight
def test_preflight_refuses_before_loading_with_the_fixes():
    plan = plan_memory("llama-3.1-70b", method="lora", batch=1, seq_len=1024)
    with pytest.raises(PreflightError) as err:
        preflight(plan, available=int(SPARK))
    text = str(err.value)
    assert f"needs {plan.total / 1e9:.1f} GB" in text and "128.0 GB" in text
    assert "method='qlora'" in text and "gradient_checkpointing=True" in text and "seq_len" in text
    assert DROP_CACHES in text and "before starting Jupyter" in text
    assert isinstance(err.value, MemoryError)


def test_preflight_passes_when_it_fits():
    plan = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True)
    result = preflight(plan, available=int(SPARK), verbose=False)
    assert result["ok"] and result["needed"] == plan.total and "OK" in result["message"]


def test_preflight_reads_free_memory_by_default():
    plan = plan_memory(TINY, dtype="fp32", device="cpu")
    assert preflight(plan, verbose=False)["available"] > 0
    with pytest.raises(ValueError, match="headroom=1.5"):
        preflight(plan, headroom=1.5)


# ------------------------------------------------------------------------------------------ one "free memory"
GIB = 2**30


def _fake_machine(monkeypatch, *, cuda: bool, integrated: bool = False, mem_free: float = 0.0,
                  gpu_total: float = 0.0, available: float = 116 * GIB, page_cache: float = 70 * GIB,
                  name: str = "NVIDIA GB10"):
    """Monkeypatch torch.cuda and /proc/meminfo: a Spark after a big read, a discrete GPU, or a CPU."""
    import types

    import labhelpers.memory as M

    meminfo = {"MemTotal": int(119.7 * GIB), "MemFree": int(mem_free or 10 * GIB),
               "MemAvailable": int(available), "Cached": int(page_cache), "Buffers": 0}
    monkeypatch.setattr(M, "_meminfo", lambda: dict(meminfo))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if cuda:
        props = types.SimpleNamespace(name=name, is_integrated=integrated, total_memory=int(gpu_total))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *_: props)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (int(mem_free), int(gpu_total)))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *_: 0)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *_: 0)
    return meminfo


def test_integrated_gpu_with_a_full_page_cache_plans_against_mem_available(monkeypatch):
    # unsloth issue 10704's numbers: CUDA free (MemFree) 41 GiB while MemAvailable stays near 116 GiB
    _fake_machine(monkeypatch, cuda=True, integrated=True, mem_free=41 * GIB, gpu_total=119.7 * GIB,
                  name="NVIDIA Spark-ish iGPU")  # detected from the properties, not from the name "GB10"
    from labhelpers.memory import _free_memory, is_integrated_gpu

    assert is_integrated_gpu()
    free, where = _free_memory()
    assert free == 116 * GIB and "MemAvailable" in where and "page cache counted as free" in where
    plan = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True)
    assert 41 * GIB * 0.9 < plan.total < 116 * GIB * 0.9  # MemFree would refuse a run that fits
    assert preflight(plan, verbose=False)["available"] == 116 * GIB
    report = memory_report()
    assert report.unified and report.gpu_free == report.system_available == 116 * GIB  # one "free" number
    text = str(report)
    assert "41.0" not in text and "44.02 GB" not in text  # CUDA's MemFree is shown nowhere
    assert "unified" in text and "124.55 GB available" in text
    assert "\n  page cache 75.16 GB: files read recently" in text and "counts it as free" in text


def test_discrete_gpu_plans_against_cuda_free_memory(monkeypatch):
    _fake_machine(monkeypatch, cuda=True, integrated=False, mem_free=60e9, gpu_total=141e9, name="NVIDIA H200")
    from labhelpers.memory import _free_memory, is_integrated_gpu

    assert not is_integrated_gpu()
    assert _free_memory() == (int(60e9), "free on NVIDIA H200")
    report = memory_report()
    assert not report.unified and report.gpu_free == int(60e9) and report.system_available == 116 * GIB
    text = str(report)
    assert "GPU 81.00 GB used / 141.00 GB (60.00 GB free)" in text and "page cache" not in text


def test_cpu_plans_against_mem_available(monkeypatch):
    _fake_machine(monkeypatch, cuda=False, available=20e9, page_cache=5e9)
    from labhelpers.memory import _free_memory, is_integrated_gpu

    assert not is_integrated_gpu()
    assert _free_memory() == (int(20e9), "MemAvailable (system RAM)")
    report = memory_report()
    assert report.gpu_free is None and not report.unified and report.system_available == int(20e9)
    assert "page cache" not in str(report) and "\n" not in str(report)


# ------------------------------------------------------------------------------------------ report / track / plot
def test_memory_report_on_cpu_has_system_fields_and_no_gpu_fields():
    report = memory_report()
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    assert report.gpu_total is None and report.torch_peak is None
    assert report.system_total > report.system_available > 0 and report.process_rss > 0
    line = str(report)
    assert "\n" not in line and "RSS" in line and "GB" in line
    assert report.as_dict()["system_total"] == report.system_total


def test_track_memory_sees_a_200_mb_allocation(capsys):
    gc.collect()
    with track_memory("alloc") as tracked:
        block = torch.ones(50_000_000)  # 200 MB, written so the pages are resident
        del block
    # The peak stands 200 MB above the block's baseline. The baseline is the lower of before and after: in
    # a long test session the allocator can hand memory back while the block runs (CI saw RSS fall by
    # 130 MB between the two), which pulls "before" above the level the 200 MB were added to.
    assert tracked.peak - min(tracked.before, tracked.after) >= 150e6
    assert tracked.peak >= tracked.before and tracked.percent > 0
    out = capsys.readouterr().out
    assert "memory before:" in out and "peak:" in out and "delta:" in out and "% of device" in out


def test_plot_memory_returns_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = plan_memory("llama-3.1-8b", batch=4, seq_len=1024)
    ax = plot_memory(plan, measured=40e9, capacity=int(SPARK))
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.patches) >= 6
    plt.close("all")
