"""One recipe on N processes: the accelerate config, the launch command and the entry point every rank runs.

- ``accelerate_config`` / ``write_accelerate_config``: FSDP, full shard, transformer-layer auto-wrap of the
  model's own decoder layer (``decoder_layer_class``: read from the loaded model's ``_no_split_modules``), and
  a full state dict, so rank 0 saves an ordinary, loadable LoRA adapter. The fields follow NVIDIA's two-Spark
  70B LoRA config (dgx-spark-playbooks, nvidia/pytorch-fine-tune/assets/configs/config_fsdp_lora.yaml).
- ``launch_command``: ``accelerate launch --num_processes N ... -m labhelpers.distributed``.
- ``python -m labhelpers.distributed --method sft|dpo``: the labs' presets (``training.sft_config`` /
  ``dpo_config``, ``lora_config``) on every rank; each rank writes ``rank<R>.json`` (the training rows it was
  handed, its losses, its peak memory, whether it saved); only rank 0 writes the adapter.

Without a GPU the processes join over gloo as plain data parallel (DDP): PyTorch's FSDP shards onto GPUs and
accelerate starts FSDP only on GPUs, so the CPU run shows the launcher, the split of the data and saving,
and the FSDP config is what a GPU run (one process per Spark) uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("sft", "dpo")


def decoder_layer_class(model: Any) -> str:
    """The class name of the model's transformer block (``LlamaDecoderLayer``...), the unit FSDP wraps and shards.

    ``model`` is a loaded model, or a name as ``load_model`` takes it (``"model"``, a folder, a hub id): then only
    its config is read and the architecture is built without weights (``init_empty_weights``), in well under a second.
    """
    if isinstance(model, str):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        from labhelpers.models import model_path

        with init_empty_weights():  # every parameter on the meta device: no memory, nothing read from disk
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path(model)))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = list(getattr(base, "_no_split_modules", None) or [])
    present = {type(m).__name__ for m in base.modules()}
    found = [n for n in names if n in present]
    if not found:
        raise ValueError(f"{type(base).__name__}: its _no_split_modules ({names}) names none of its modules, so "
                         "FSDP cannot find the decoder layer to wrap; pass layer_cls='<the class of one block>'.")
    return found[0]


def accelerate_config(layer_cls: str, *, num_machines: int = 1, num_processes: int | None = None,
                      machine_rank: int = 0, main_process_ip: str | None = None, main_process_port: int = 29500,
                      mixed_precision: str = "bf16") -> dict[str, Any]:
    """accelerate's config (as ``accelerate config`` writes it) for FSDP full shard, one process per machine by
    default."""
    num_processes = num_machines if num_processes is None else num_processes
    if num_machines < 1 or num_processes < num_machines:
        raise ValueError(f"num_machines={num_machines}, num_processes={num_processes}: use at least one process "
                         "per machine (a Spark has one GPU: num_processes = num_machines).")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank={machine_rank}: 0 on the main machine, 1..{num_machines - 1} on the others.")
    if num_machines > 1 and not main_process_ip:
        raise ValueError("main_process_ip is missing: give the main Spark's address on the ConnectX link "
                         "(the IP of the interface NCCL_SOCKET_IFNAME names), the same on every machine.")
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "FSDP",
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "fsdp_config": {
            "fsdp_version": 1,
            "fsdp_sharding_strategy": "FULL_SHARD",  # weights, gradients and optimizer states split over ranks
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": layer_cls,  # one FSDP unit per decoder layer
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # gathered on save: rank 0 writes a normal adapter file
            "fsdp_use_orig_params": True,  # frozen base + trainable LoRA weights in one unit
            "fsdp_cpu_ram_efficient_loading": True,  # rank 0 reads the checkpoint, the others receive it
            "fsdp_sync_module_states": True,  # required by cpu_ram_efficient_loading
            "fsdp_offload_params": False,
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
        },
        "machine_rank": machine_rank,
        "main_training_function": "main",
        "mixed_precision": mixed_precision,
        "num_machines": num_machines,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if num_machines > 1:
        config.update(main_process_ip=main_process_ip, main_process_port=main_process_port)
    return config


def write_accelerate_config(path: str | Path, layer_cls: str, **settings: Any) -> Path:
    """Write ``accelerate_config(layer_cls, **settings)`` as YAML to ``path``, ready for ``--config_file``."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(accelerate_config(layer_cls, **settings), sort_keys=False))
    return path


def launch_command(output_dir: str | Path, *, method: str = "sft", num_processes: int = 2,
                   config_file: str | Path | None = None, max_steps: int | None = None,
                   rows: int | None = None) -> list[str]:
    """``accelerate launch`` of this module on ``num_processes`` processes: with ``config_file`` (FSDP), or CPU DDP.

    The launcher is run as ``python -m accelerate.commands.launch`` with this interpreter, so it works from a
    kernel whose virtual environment is not on ``PATH``.
    """
    # accelerate's launcher run by this Python: the `accelerate` script need not be on PATH (a venv not activated)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if config_file is not None:
        cmd[3:3] = ["--config_file", str(config_file)]
    else:  # accelerate starts several local processes (through torchrun) only on this path; the ranks use gloo
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "labhelpers.distributed", "--method", method, "--output", str(output_dir)]
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    return cmd + (["--rows", str(rows)] if rows else [])


def two_spark_commands(config_file: str, main_ip: str, ifname: str = "enp1s0f1np1", port: int = 29500,
                       method: str = "sft") -> str:
    """The commands to run on each of two Sparks (same config file; only ``--machine_rank`` differs)."""
    lines = []
    for rank in (0, 1):
        lines += [f"# Spark {rank}" + (" (main)" if rank == 0 else ""),
                  f"export NCCL_SOCKET_IFNAME={ifname} GLOO_SOCKET_IFNAME={ifname}",
                  f"accelerate launch --config_file {config_file} --num_machines 2 --num_processes 2 "
                  f"--machine_rank {rank} --main_process_ip {main_ip} --main_process_port {port} \\",
                  f"    -m labhelpers.distributed --method {method} --output outputs/full/11_two_sparks/run", ""]
    return "\n".join(lines).rstrip()


def run_streamed(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``cmd``, echoing its stdout and stderr line by line as they come (a notebook shows both); its exit code."""
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, **(env or {})})

    def echo(stream: Any, target: Any) -> None:
        for line in stream:
            print(line, end="", file=target, flush=True)

    threads = [threading.Thread(target=echo, args=(proc.stdout, sys.stdout)),
               threading.Thread(target=echo, args=(proc.stderr, sys.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return proc.wait()


def _record_rows(trainer: Any, seen: list[int]) -> None:
    """Make the trainer's data loader note the index of every training row this rank is handed."""
    make = trainer.get_train_dataloader

    def get_train_dataloader() -> Any:
        loader = make()
        dataset = loader.dataset
        fetch = dataset.__getitems__

        def recording(indices: list[int]) -> Any:
            seen.extend(int(i) for i in indices)
            return fetch(indices)

        dataset.__getitems__ = recording  # torch's fetcher calls dataset.__getitems__(batch of indices)
        return loader

    trainer.get_train_dataloader = get_train_dataloader


def run(method: str, output_dir: str | Path, *, max_steps: int | None = None, rows: int | None = None,
        grad_accum: int | None = None, verbose: bool = True) -> dict[str, Any]:
    """Train ``method`` with the labs' presets on this rank, save the adapter (rank 0), write ``rank<R>.json``."""
    import torch
    from trl import DPOTrainer, SFTTrainer

    from labhelpers import training
    from labhelpers.data import load_lab_dataset
    from labhelpers.memory import track_memory
    from labhelpers.models import load_model, load_tokenizer
    from labhelpers.profiles import profile

    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}.")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:  # N ranks' text progress bars interleave into an unreadable log: the rank lines say it all
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    out = Path(output_dir)
    lab = profile(verbose=False)
    tokenizer, model = load_tokenizer(), load_model(for_training=True)
    overrides = dict(save_strategy="no", use_cpu=not torch.cuda.is_available(), ddp_find_unused_parameters=False,
                     disable_tqdm=True)
    overrides.update({k: v for k, v in (("max_steps", max_steps), ("gradient_accumulation_steps", grad_accum)) if v})
    if method == "sft":
        data = training.as_prompt_completion(load_lab_dataset("sft", limit=rows or lab.sft_train_rows))
        args, trainer_cls = training.sft_config(lab, out / "checkpoints", **overrides), SFTTrainer
    else:
        data = load_lab_dataset("preference", limit=rows or lab.pref_train_rows)
        args, trainer_cls = training.dpo_config(lab, out / "checkpoints", **overrides), DPOTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                          peft_config=training.lora_config(lab))
    seen: list[int] = []
    _record_rows(trainer, seen)
    start = time.perf_counter()
    with track_memory(f"rank {rank}", verbose=False) as peak:
        trainer.train()
    trained = seen[: trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps]
    trainer.save_model(str(out / "adapter"))  # every rank calls it (FSDP gathers); only rank 0 writes
    state = trainer.accelerator.state
    record = {"rank": rank, "world_size": world, "distributed_type": str(state.distributed_type).split(".")[-1],
              "backend": state.backend, "device": str(trainer.args.device), "method": method,
              "rows": trained, "prefetched": seen[len(trained):], "train_rows": len(trainer.train_dataset),
              "steps": trainer.state.global_step,
              "global_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
              "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
              "peak_memory_bytes": peak.peak, "saved": bool(trainer.args.should_save),
              "wall_s": round(time.perf_counter() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))
    if verbose:
        print(f"[rank {rank}/{world}] {record['distributed_type']} ({record['backend'] or 'one process'}) on "
              f"{record['device']}: {record['steps']} steps, trained on rows {sorted(trained)}, logged losses "
              f"{', '.join(f'{x:.3f}' for x in record['losses'])}; "
              f"{'saved the adapter' if record['saved'] else 'did not save (only rank 0 writes)'}", flush=True)
    return record


def read_ranks(output_dir: str | Path) -> list[dict[str, Any]]:
    """The ``rank<R>.json`` records a launched run wrote, by rank."""
    found = sorted(Path(output_dir).glob("rank*.json"))
    if not found:
        raise FileNotFoundError(f"no rank*.json in {output_dir}: the launched run did not finish; read its log above.")
    return sorted((json.loads(p.read_text()) for p in found), key=lambda r: r["rank"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m labhelpers.distributed`` (what ``accelerate launch`` runs on every rank)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default="sft")
    parser.add_argument("--output", required=True, help="folder for rank*.json and the adapter")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the profile's steps")
    parser.add_argument("--rows", type=int, default=None, help="training rows (default: the profile's)")
    parser.add_argument("--grad-accum", type=int, default=None, help="default: the profile's")
    args = parser.parse_args(argv)
    run(args.method, args.output, max_steps=args.max_steps, rows=args.rows, grad_accum=args.grad_accum)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
