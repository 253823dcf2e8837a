"""labhelpers.distributed: the accelerate config (parsed by accelerate itself), the launch command, and a real
two-process run of the entry point (gloo on CPU) on a tiny random-weight Llama: different rows per rank,
only rank 0 saves, the adapter loads."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from labhelpers import distributed


def test_the_layer_to_wrap_is_read_from_the_model(tiny_llama):
    from peft import LoraConfig, get_peft_model

    assert distributed.decoder_layer_class(tiny_llama) == "LlamaDecoderLayer"
    adapted = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        assert distributed.decoder_layer_class(adapted) == "LlamaDecoderLayer"  # through the PEFT wrapper
    finally:
        adapted.unload()


def test_the_layer_to_wrap_is_read_from_a_config_without_loading_weights(tmp_path):
    from transformers import LlamaConfig, Qwen2Config

    for config, expected in ((LlamaConfig, "LlamaDecoderLayer"), (Qwen2Config, "Qwen2DecoderLayer")):
        folder = tmp_path / expected
        config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=128).save_pretrained(folder)  # a config, no weight file
        assert distributed.decoder_layer_class(str(folder)) == expected


def test_a_model_without_a_known_block_is_named():
    import torch

    with pytest.raises(ValueError, match="Linear: its _no_split_modules \\(\\[\\]\\) names none"):
        distributed.decoder_layer_class(torch.nn.Linear(2, 2))


def test_the_config_is_what_accelerate_reads(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    path = distributed.write_accelerate_config(tmp_path / "fsdp.yaml", "LlamaDecoderLayer", num_machines=2,
                                               machine_rank=1, main_process_ip="192.168.100.10")
    config = load_config_from_file(str(path))  # what `accelerate launch --config_file` does; unknown keys raise
    assert isinstance(config, ClusterConfig) and config.distributed_type == DistributedType.FSDP
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 2, 1)
    assert config.main_process_ip == "192.168.100.10" and config.main_process_port == 29500
    fsdp = config.fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # so Trainer.save_model writes the adapter on rank 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_machines=2), "main_process_ip is missing"),
    (dict(num_machines=2, machine_rank=2, main_process_ip="10.0.0.1"), "machine_rank=2"),
    (dict(num_machines=2, num_processes=1, main_process_ip="10.0.0.1"), "num_processes=1"),
])
def test_bad_config_input_names_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distributed.accelerate_config("LlamaDecoderLayer", **kwargs)


def test_launch_and_two_spark_commands():
    cpu = distributed.launch_command("out", num_processes=2, max_steps=2, rows=24)
    assert cpu[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert "--multi_gpu" in cpu
    assert cpu[cpu.index("labhelpers.distributed") - 1] == "-m" and cpu[-4:] == ["--max-steps", "2", "--rows", "24"]
    gpu = distributed.launch_command("out", config_file="fsdp.yaml", method="dpo")
    assert gpu[3:5] == ["--config_file", "fsdp.yaml"] and "--multi_gpu" not in gpu and "dpo" in gpu
    text = distributed.two_spark_commands("fsdp.yaml", main_ip="192.168.100.10")
    assert ("--machine_rank 0" in text and "--machine_rank 1" in text
            and text.count("--main_process_ip 192.168.100.10") == 2)
    assert "NCCL_SOCKET_IFNAME=enp1s0f1np1" in text


def test_two_processes_train_on_different_rows_and_only_rank_0_saves(tiny_llama, tokenizer, tmp_path):
    from peft import PeftModel

    model_dir = tmp_path / "tiny"
    tiny_llama.save_pretrained(model_dir)  # safetensors
    tokenizer.save_pretrained(model_dir)
    env = {**os.environ, "LABS_MODEL": str(model_dir), "LABS_PROFILE": "smoke",
           "PYTHONPATH": os.pathsep.join([str(distributed.Path(distributed.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    cmd = distributed.launch_command(tmp_path / "run", num_processes=2, max_steps=2, rows=24)
    # a hang guard, not a speed check: the run takes about 20 s on 2 idle cores (this test's printed time)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = distributed.read_ranks(tmp_path / "run")
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["backend"] == "gloo" and r["distributed_type"] == "MULTI_CPU" and r["steps"] == 2 for r in ranks)
    rows0, rows1 = set(ranks[0]["rows"]), set(ranks[1]["rows"])
    assert len(rows0) == len(rows1) == 2 * 4 and not rows0 & rows1  # 2 steps x batch 4, disjoint
    assert [r["saved"] for r in ranks] == [True, False]
    assert "[rank 0/2]" in done.stdout and "[rank 1/2]" in done.stdout
    assert not [line for line in done.stderr.splitlines() if line.strip()], done.stderr[-2000:]  # a quiet log
    loaded = PeftModel.from_pretrained(tiny_llama, str(tmp_path / "run" / "adapter"))
    try:
        assert sum(p.numel() for n, p in loaded.named_parameters() if "lora_" in n) > 0
    finally:
        loaded.unload()
    print(f"two-process run: {time.perf_counter() - start:.1f} s", file=sys.stderr)
