"""Memory report, tracking, plan (one process and per rank), preflight, Sparks needed and plot (no weights; fast)."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from labhelpers.arch import KNOWN_CONFIGS, arch_spec
from labhelpers.memory import (
    DROP_CACHES,
    NF4_BYTES,
    MemoryPlan,
    PreflightError,
    plan_memory,
    plot_memory,
    preflight,
    report_memory,
    sparks_needed,
    track_memory,
)

SPARK = 128e9
TINY = dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=256, tie_word_embeddings=False)


def _tiny_lora_model(method: str = "lora", rank: int = 4, targets="all-linear", dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation="sdpa"))
    if method == "full":
        return model, model
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora), model


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
    for name in ("llama-3.1-8b", "llama-3.1-70b"):  # the published configs, on the meta device (no memory)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**KNOWN_CONFIGS[name]))
        assert arch_spec(name).n_params == model.num_parameters(), name


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


@pytest.mark.parametrize("method, dtype, targets, dropout", [
    ("lora", "fp32", "all-linear", 0.0), ("full", "fp32", "all-linear", 0.0),
    ("lora", "fp32", ["q_proj", "v_proj"], 0.0), ("lora", "bf16", "all-linear", 0.0),
    ("lora", "fp32", "all-linear", 0.05), ("lora", "bf16", "all-linear", 0.05)])
def test_activation_estimate_counts_the_tensors_autograd_saves(method, dtype, targets, dropout, saved_bytes_per_token):
    model, inner = _tiny_lora_model(method, rank=4, targets=targets, dropout=dropout)
    if dtype == "bf16":
        model.to(torch.bfloat16)
        for name, p in model.named_parameters():  # peft keeps adapters in fp32
            if "lora_" in name:
                p.data = p.data.float()
    model.train()
    tokens = torch.randint(0, TINY["vocab_size"], (2, 16))
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    measured = saved_bytes_per_token(model, inner.model.layers[1], tokens, head_dim)
    plan = plan_memory(TINY, method=method, rank=4, dtype=dtype, target_modules=targets, autocast=False,
                       device="cpu", lora_dropout=dropout)
    assert measured == pytest.approx(plan.details["activation_bytes_per_token_per_layer"], rel=0.02)
    # The activations the plan reports are that measured figure for every layer and every planned token (the final
    # norm and the head's input add a few %): a total counted twice, or a layer left out, falls outside.
    per_token = plan.activations / (plan.batch * plan.seq_len)
    assert per_token == pytest.approx(TINY["num_hidden_layers"] * measured, rel=0.1)


def test_saved_activation_bytes_counts_every_decoder_layer_as_the_plan_does():
    from labhelpers.memory import saved_activation_bytes

    model, inner = _tiny_lora_model("lora", rank=4, dropout=0.05)
    model.train()
    ids = torch.randint(0, TINY["vocab_size"], (1, 32))
    layers = list(inner.model.layers)
    whole = saved_activation_bytes(model, ids)  # default: every *DecoderLayer
    per_layer = [saved_activation_bytes(model, ids, [layer]) for layer in layers]
    rotary = 2 * 32 * (TINY["hidden_size"] // TINY["num_attention_heads"]) * 4  # cos, sin: saved once, shared
    assert whole == sum(per_layer) - (len(layers) - 1) * rotary
    plan = plan_memory(TINY, method="lora", batch=1, seq_len=32, rank=4, dtype="fp32", autocast=False, device="cpu",
                       lora_dropout=0.05)
    assert plan.activations == pytest.approx(whole, rel=0.1)  # what lab 05's Self-check compares
    with pytest.raises(ValueError, match="no decoder layers"):
        saved_activation_bytes(torch.nn.Linear(4, 4), torch.zeros(1, 4))


CHUNKED = dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True)  # the embedded vocabulary


@pytest.mark.parametrize("tokens", [64, 200])
def test_chunked_lm_head_term_is_the_peak_of_trls_fused_head(tokens, cpu_peak_bytes):
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction

    torch.manual_seed(0)
    weight = torch.randn(CHUNKED["vocab_size"], CHUNKED["hidden_size"]) * 0.02
    hidden = torch.randn(tokens, CHUNKED["hidden_size"], requires_grad=True)
    targets = torch.randint(0, CHUNKED["vocab_size"], (tokens,))

    def fused():  # what SFTTrainer's fused_lm_head forward runs, with the outputs it asks for
        out = _ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
                                            ("log_probs", "entropy", "is_top1"))
        (-out[0].sum()).backward()

    measured = cpu_peak_bytes(fused)
    chunked = plan_memory(CHUNKED, method="qlora", batch=1, seq_len=tokens, dtype="fp32", device="cpu",
                          lm_head="chunked")
    full = plan_memory(CHUNKED, method="qlora", batch=1, seq_len=tokens, dtype="fp32", device="cpu")
    assert measured == pytest.approx(chunked.logits, rel=0.05)
    # on a CPU the fold's fp32 tiles (32,768 wide) outweigh the full logits' 12 bytes x 49,152 per token
    assert chunked.logits > 1.5 * full.logits and chunked.details["lm_head"] == "chunked"


def test_chunked_lm_head_at_the_full_shape_is_one_tile_not_the_logits():
    full = plan_memory("llama-3.1-8b", seq_len=4096, gradient_checkpointing=True)
    chunked = plan_memory("llama-3.1-8b", seq_len=4096, gradient_checkpointing=True, lm_head="chunked")
    assert full.logits == 12 * 128256 * 4096
    assert chunked.logits == 2 * 4096 * 32768 + 6 * 4096 * 4096  # one bf16 tile + the fp32 hidden gradient
    assert chunked.total < full.total - 5e9


def test_qlora_adapter_and_its_adam_states_are_bf16_as_trl_trains_them():
    qlora = plan_memory("llama-3.1-8b", method="qlora")
    lora = plan_memory("llama-3.1-8b", method="lora")
    n = qlora.trainable_params
    assert qlora.lora == qlora.gradients == 2 * n and qlora.optimizer_states == 4 * n
    assert lora.lora == lora.gradients == 4 * n and lora.optimizer_states == 8 * n  # peft's fp32 adapter
    param = torch.nn.Parameter(torch.zeros(8, dtype=torch.bfloat16))  # torch's AdamW keeps states in the param dtype
    param.grad = torch.ones_like(param)
    opt = torch.optim.AdamW([param])
    opt.step()
    assert {opt.state[param][k].dtype for k in ("exp_avg", "exp_avg_sq")} == {torch.bfloat16}


def _saved_and_masks(model, layer, ids, **kwargs):
    """Bytes autograd saves inside ``layer`` in one forward, and the attention masks SDPA is handed (bytes each)."""
    params = {t.untyped_storage().data_ptr() for t in model.parameters()}
    kept, inside, masks = {}, [False], []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        if kw.get("attn_mask") is not None:
            masks.append(kw["attn_mask"].untyped_storage().nbytes())
        return sdpa(*args, **kw)

    def pack(t):
        if inside[0] and t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t
        return t

    pre = layer.register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
    post = layer.register_forward_hook(lambda *a: inside.__setitem__(0, False))
    try:
        torch.nn.functional.scaled_dot_product_attention = spy
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids, use_cache=False, **kwargs)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
        pre.remove(), post.remove()
    return sum(t.untyped_storage().nbytes() for t in kept.values()), masks


def test_packed_batch_keeps_a_block_mask_per_layer_as_the_plan_counts():
    model, inner = _tiny_lora_model("full")
    model.train()
    batch, extra = 2, {}
    for seq in (32, 64):  # two rows packed padding-free into one sequence, positions restarting per row
        ids = torch.randint(0, TINY["vocab_size"], (1, batch * seq))
        causal, no_masks = _saved_and_masks(model, inner.model.layers[1], ids)
        packed, masks = _saved_and_masks(model, inner.model.layers[1], ids,
                                         position_ids=torch.arange(seq).repeat(batch)[None])
        assert no_masks == [] and masks == [(batch * seq) ** 2] * TINY["num_hidden_layers"]  # one shared bool mask
        extra[batch * seq] = packed - causal
    (l1, d1), (l2, d2) = extra.items()
    quadratic = (d2 / l2 - d1 / l1) / (l2 - l1)  # extra = quadratic * L^2 + linear * L
    assert quadratic == pytest.approx(4)  # each layer's SDPA keeps its own fp32 copy of the mask
    # (the linear part, 4 x hidden bytes per token, one fp32 copy SDPA makes with a mask, is left out: 6 % of
    # a layer's saved bytes on the embedded model, against 4 L^2 = 67 MB per layer at L = 4,096)
    kw = dict(method="full", batch=batch, seq_len=64, dtype="fp32", device="cpu")
    plan, plain = plan_memory(TINY, **kw, packed=True), plan_memory(TINY, **kw)
    assert plan.activations - plain.activations == TINY["num_hidden_layers"] * 4 * l2**2
    ckpt = plan_memory(TINY, **kw, packed=True, gradient_checkpointing=True)
    assert ckpt.details["packed_mask_bytes"] == 4 * l2**2 + masks[0]  # one recomputed layer's copy + the bool mask


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
    (dict(lm_head="fused"), "lm_head='fused'"),
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


def test_preflight_without_available_plans_against_this_machines_free_memory(monkeypatch):
    plan = plan_memory(TINY, dtype="fp32", device="cpu")
    _fake_machine(monkeypatch, cuda=False, available=10 * plan.total)  # MemAvailable of a CPU machine
    result = preflight(plan, verbose=False)
    assert result["ok"] and result["available"] == 10 * plan.total and "MemAvailable (system RAM)" in result["message"]
    _fake_machine(monkeypatch, cuda=False, available=plan.total)  # 90 % of it is too little
    with pytest.raises(PreflightError, match=r"is MemAvailable \(system RAM\)"):
        preflight(plan, verbose=False)
    with pytest.raises(ValueError, match="headroom=1.5"):
        preflight(plan, headroom=1.5)


# ------------------------------------------------------------------------------------------ per rank
def _tiny_counts(r: int) -> dict[str, int]:
    """TINY's parameters by hand: Llama layer = q, k, v, o + gate, up, down; 2 RMSNorms per layer + a final one."""
    h, inter, layers, vocab = (TINY["hidden_size"], TINY["intermediate_size"],
                               TINY["num_hidden_layers"], TINY["vocab_size"])
    kv = TINY["num_key_value_heads"] * h // TINY["num_attention_heads"]
    linear = h * h + 2 * h * kv + h * h + 3 * h * inter  # per layer
    lora = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + inter) + (inter + h))  # r x (in + out), per layer
    return dict(linear=linear, lora=lora, norms_per_layer=2 * h, layers=layers,
                root=2 * vocab * h + h, total=2 * vocab * h + layers * (linear + 2 * h) + h)


def test_full_shard_splits_weights_adapters_gradients_and_optimizer_and_gathers_the_largest_layer():
    c, n, r = _tiny_counts(4), 2, 4
    one = plan_memory(TINY, rank=r, dtype="bf16", device="cpu")
    two = plan_memory(TINY, rank=r, dtype="bf16", device="cpu", world_size=n, sharding="full_shard")
    lora_params = c["layers"] * c["lora"]
    assert two.weights == -(-2 * c["total"] // n)  # bf16 weights, ceil(bytes / 2)
    assert two.lora == two.gradients == -(-4 * lora_params // n)  # fp32 adapters and their gradients
    assert two.optimizer_states == -(-8 * lora_params // n)  # AdamW: two fp32 states
    layer_unit = 2 * (c["linear"] + c["norms_per_layer"]) + 4 * c["lora"]
    assert two.communication == max(layer_unit, 2 * c["root"])  # one unit gathered whole
    for part in ("activations", "logits", "workspace", "overhead"):  # each rank runs its own micro-batch
        assert getattr(two, part) == getattr(one, part), part
    assert one.communication == 0 and one.world_size == 1 and "per rank" not in one.table()
    assert "per rank of 2 (full_shard)" in two.table() and "communication" in two.table()


def test_full_shard_gathers_the_root_when_the_embeddings_outweigh_a_layer():
    cfg = KNOWN_CONFIGS["llama-3.1-70b"]
    h, vocab = cfg["hidden_size"], cfg["vocab_size"]
    plan = plan_memory("llama-3.1-70b", method="lora", world_size=2)
    assert plan.communication == 2 * (2 * vocab * h + h)  # untied embeddings + lm_head + final norm, bf16


def test_no_shard_replicates_everything_and_adds_the_gradient_buckets():
    one = plan_memory("llama-3.1-8b", method="lora")
    dp = plan_memory("llama-3.1-8b", method="lora", world_size=2, sharding="no_shard")
    for part in MemoryPlan.COMPONENTS:
        if part != "communication":
            assert getattr(dp, part) == getattr(one, part), part
    assert dp.communication == one.gradients == 4 * one.trainable_params  # DDP's reducer buckets
    assert dp.total == one.total + one.gradients


def test_world_size_one_is_the_single_process_plan():
    one = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True)
    for sharding in ("full_shard", "no_shard"):
        same = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True, world_size=1,
                           sharding=sharding)
        assert same.breakdown() == one.breakdown() and same.sharding == "none"


@pytest.mark.parametrize("kwargs, message", [(dict(world_size=0), "world_size=0"),
                                             (dict(world_size=2.0), "world_size=2.0"),
                                             (dict(world_size=2, sharding="ddp"), "sharding='ddp'")])
def test_bad_distributed_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_memory("llama-3.1-8b", **kwargs)


def test_sparks_needed_one_two_or_more():
    ckpt = dict(seq_len=1024, gradient_checkpointing=True)
    lora70 = plan_memory("llama-3.1-70b", method="lora", **ckpt)
    need = sparks_needed(lora70, per_spark=SPARK)
    assert lora70.total > 0.9 * SPARK  # one Spark is not enough...
    per_rank = plan_memory("llama-3.1-70b", method="lora", world_size=2, **ckpt).total
    assert need["sparks"] == 2 and need["per_rank"][2] == per_rank <= 0.9 * SPARK  # ...two are
    assert "needs 2 Sparks" in need["message"] and f"{per_rank / 1e9:.1f} GB per rank" in need["message"]
    qlora70 = plan_memory("llama-3.1-70b", method="qlora", **ckpt)
    assert sparks_needed(qlora70, per_spark=SPARK)["sparks"] == 1
    full70 = plan_memory("llama-3.1-70b", method="full", dtype="fp32", autocast=True, **ckpt)
    too_big = sparks_needed(full70, per_spark=SPARK, most=2)
    assert too_big["sparks"] is None and "2 Sparks are not enough" in too_big["message"]
    with pytest.raises(ValueError, match="most=0"):
        sparks_needed(full70, most=0)


def test_preflight_tells_whether_two_sparks_would_fit():
    plan = plan_memory("llama-3.1-70b", method="lora", seq_len=1024, gradient_checkpointing=True)
    two = plan_memory("llama-3.1-70b", method="lora", seq_len=1024, gradient_checkpointing=True, world_size=2)
    with pytest.raises(PreflightError, match=rf"two Sparks .*: {two.total / 1e9:.1f} GB per rank, which fits"):
        preflight(plan, available=int(SPARK))
    with pytest.raises(PreflightError, match="which still does not fit"):
        preflight(plan, available=int(0.5 * SPARK))


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
    from labhelpers.memory import free_memory, is_integrated_gpu

    assert is_integrated_gpu()
    free, where = free_memory()
    assert free == 116 * GIB and "MemAvailable" in where and "page cache counted as free" in where
    plan = plan_memory("llama-3.1-70b", method="qlora", gradient_checkpointing=True)
    assert 41 * GIB * 0.9 < plan.total < 116 * GIB * 0.9  # MemFree would refuse a run that fits
    assert preflight(plan, verbose=False)["available"] == 116 * GIB
    report = report_memory()
    assert report.unified and report.gpu_free == report.system_available == 116 * GIB  # one "free" number
    text = str(report)
    assert "41.0" not in text and "44.02 GB" not in text  # CUDA's MemFree is shown nowhere
    assert "unified" in text and "124.55 GB available" in text
    assert "\n  page cache 75.16 GB: files read recently" in text and "counts it as free" in text


def test_discrete_gpu_plans_against_cuda_free_memory(monkeypatch):
    _fake_machine(monkeypatch, cuda=True, integrated=False, mem_free=60e9, gpu_total=141e9, name="NVIDIA H200")
    from labhelpers.memory import free_memory, is_integrated_gpu

    assert not is_integrated_gpu()
    assert free_memory() == (int(60e9), "free on NVIDIA H200")
    report = report_memory()
    assert not report.unified and report.gpu_free == int(60e9) and report.system_available == 116 * GIB
    text = str(report)
    assert "GPU 81.00 GB used / 141.00 GB (60.00 GB free)" in text and "page cache" not in text


def test_cpu_plans_against_mem_available(monkeypatch):
    _fake_machine(monkeypatch, cuda=False, available=20e9, page_cache=5e9)
    from labhelpers.memory import free_memory, is_integrated_gpu

    assert not is_integrated_gpu()
    assert free_memory() == (int(20e9), "MemAvailable (system RAM)")
    report = report_memory()
    assert report.gpu_free is None and not report.unified and report.system_available == int(20e9)
    assert "page cache" not in str(report) and "\n" not in str(report)


# ------------------------------------------------------------------------------------------ report / track / plot
@pytest.mark.gpu
def test_memory_report_on_cpu_has_system_fields_and_no_gpu_fields():
    report = report_memory()
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


def test_track_memory_leaves_out_freed_memory_the_c_library_keeps():
    """A block that frees every other chunk and then allocates chunks too big for the holes: the RSS keeps the
    holes, the bytes in use do not. ``peak`` is the in-use measure (as CUDA's ``max_memory_allocated``),
    ``rss_peak`` the resident one; with the RSS as ``peak`` (the measure before issue #24) this fails."""
    import ctypes
    import ctypes.util
    import time

    from labhelpers import memory

    if memory._malloc_counter() is None:
        pytest.skip("the C library has no mallinfo2 (not glibc >= 2.33): peak is the RSS peak there")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def chunks(n: int, size: int) -> list[int]:
        out = [libc.malloc(size) for _ in range(n)]
        for p in out:
            libc.memset(p, 1, size)  # resident
        return out

    gc.collect()
    small, large = 64 << 10, 96 << 10  # both under glibc's smallest mmap threshold (128 KB): heap chunks
    with track_memory("holes", device="cpu", verbose=False) as tracked:
        first = chunks(1600, small)  # 100 MB
        for p in first[::2]:
            libc.free(p)  # 50 MB of 64 KB holes: resident, free, too small for what comes next
        second = chunks(530, large)  # 50 MB more in use, in new pages
        time.sleep(0.3)
    for p in first[1::2] + second:
        libc.free(p)
    in_use, resident = tracked.peak - tracked.before, tracked.rss_peak - tracked.before
    assert 80e6 <= in_use <= 125e6, (in_use, resident)
    assert resident - in_use >= 30e6, (in_use, resident)
    assert "malloc" in tracked.method


def test_plot_memory_returns_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = plan_memory("llama-3.1-8b", batch=4, seq_len=1024)
    ax = plot_memory(plan, measured=40e9, capacity=int(SPARK))
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.patches) >= 6
    plt.close("all")


def test_grpo_plan_adds_the_reference_and_the_generation_kv_cache():
    arch = arch_spec("llama-3.1-8b")
    base = plan_memory("llama-3.1-8b", batch=8, seq_len=128)
    # the KV cache of 16 completions of 64 + 64 tokens: K and V, every layer, kv_heads x head_dim values, bf16
    gen = plan_memory("llama-3.1-8b", batch=8, seq_len=128, kv_rows=16, kv_tokens=128)
    assert gen.kv_cache == 2 * arch.layers * arch.kv_heads * arch.head_dim * 2 * 16 * 128
    assert gen.total - base.total == gen.kv_cache and "kv cache" in gen.table() and "kv cache" not in base.table()
    ref = plan_memory("llama-3.1-8b", batch=8, seq_len=128, reference=True)
    assert ref.reference == ref.lora > 0  # TRL's frozen "ref" copy of a loaded adapter
    full = plan_memory("llama-3.1-8b", method="full", batch=8, seq_len=128, reference=True)
    assert full.reference == full.weights  # a full fine-tune keeps a whole second model
    with pytest.raises(ValueError, match="kv_rows"):
        plan_memory("llama-3.1-8b", kv_rows=-1)
