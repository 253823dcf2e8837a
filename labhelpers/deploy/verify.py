"""Deployment, step 4: does the GGUF behave like the merged model? Checked in llama.cpp, Ollama's engine.

llama.cpp runs in a child process (:mod:`labhelpers.deploy.native`): if it crashes, ``verify_gguf`` raises
``NativeCrash`` naming the file, and the notebook kernel survives.

``verify_gguf`` renders each prompt with the tokenizer's chat template and checks, per prompt:

- the prompt tokens: HF tokenizer ids vs llama.cpp's tokenization of the same text (special tokens
  parsed, BOS as the GGUF says) -- a mismatch means the served model would see another format;
- the greedy answer: llama.cpp decodes greedily, then the HF model reads prompt + that answer in one
  forward pass and its own greedy choice is compared at every step. If they agree everywhere, HF's
  greedy decoding produces exactly the same tokens (same prefix, same choice, by induction), at the
  cost of one forward pass instead of one per token. For exact weights (f16/bf16/f32) every
  disagreement must be a numerical tie: HF's two candidates within ``tie_tolerance`` logits (f16
  arithmetic rounds differently from float32). For a quantized file the share of agreeing steps
  is reported (with a floor, ``min_agreement``), not asserted equal;
- the negative log-likelihood per token of the prompts under both models (perplexity = exp(NLL)):
  what quantization costs on text neither model wrote.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labhelpers.deploy.gguf import LOSSLESS_FILE_TYPES, gguf_summary, require_llama_cpp
from labhelpers.deploy.merge import Stopwatch


@dataclass
class PromptCheck:
    """One prompt of ``verify_gguf``: its tokens, llama.cpp's greedy answer and how far HF agrees."""

    prompt: str
    tokens_match: bool
    n_prompt_tokens: int
    answer: list[int]  # llama.cpp's greedy answer on the GGUF
    text: str
    first_divergence: int | None  # first answer step where HF's greedy choice differs; None = identical
    divergence_margin: float | None  # HF logit of its own choice minus that of llama.cpp's token there
    max_margin: float  # the largest such margin over all disagreeing steps (0.0 if none)
    agreement: float  # share of answer steps where HF's greedy choice = llama.cpp's token
    nll_hf: float  # mean negative log-likelihood per prompt token
    nll_gguf: float

    @property
    def identical(self) -> bool:
        return self.first_divergence is None


@dataclass
class VerifyResult:
    """``verify_gguf``'s answer: ``.ok``, per-prompt ``.prompts``, its wall time and a readable ``.summary()``."""

    gguf: Path
    file_type: str
    lossless: bool
    ok: bool
    prompts: list[PromptCheck] = field(default_factory=list)
    tie_tolerance: float = 0.1
    min_agreement: float = 0.75
    seconds: float = 0.0  # wall time of verify_gguf, loading the HF model included when it loaded it

    @property
    def n_identical(self) -> int:
        return sum(p.identical for p in self.prompts)

    @property
    def agreement(self) -> float:
        return sum(p.agreement for p in self.prompts) / max(len(self.prompts), 1)

    @property
    def nll_delta(self) -> float:
        """Mean NLL/token of the GGUF minus the HF model's, on the prompts (0 = nothing lost)."""
        return sum(p.nll_gguf - p.nll_hf for p in self.prompts) / max(len(self.prompts), 1)

    def summary(self) -> str:
        n = len(self.prompts)
        rule = "exact weights: greedy answers must match" if self.lossless else "quantized: agreement is reported"
        ties = sum(not p.identical and p.max_margin <= self.tie_tolerance for p in self.prompts)
        nll_hf = sum(p.nll_hf for p in self.prompts) / max(n, 1)
        lines = [
            f"{self.gguf.name} ({self.file_type}, {rule}) -> {'OK' if self.ok else 'FAILED'} ({self.seconds:.1f} s)",
            f"  prompt tokens identical (HF vs llama.cpp): {sum(p.tokens_match for p in self.prompts)}/{n}",
            f"  greedy answers identical: {self.n_identical}/{n}"
            + (f" ({ties} more differ only at numerical ties, margin <= {self.tie_tolerance})" if ties else ""),
            f"  steps where HF's greedy choice = llama.cpp's: {100 * self.agreement:.1f}%",
            f"  prompt NLL/token: HF {nll_hf:.4f}, GGUF {nll_hf + self.nll_delta:.4f} "
            f"(delta {self.nll_delta:+.4f}, perplexity x{math.exp(self.nll_delta):.3f})",
        ]
        for i, p in enumerate(self.prompts):
            if not p.identical:
                lines.append(f"  prompt {i}: first difference at answer token {p.first_divergence} "
                             f"(HF margin {p.divergence_margin:.3f}, largest {p.max_margin:.3f})")
        return "\n".join(lines)

    __str__ = summary


def _log_softmax(rows: Any) -> Any:
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _llama_greedy(gguf: str, texts: list[str], bos: str, max_new_tokens: int, stop: list[int],
                  threads: int, seed: int, n_ctx: int) -> tuple[int, list[dict[str, Any]]]:
    """Runs in a child process (``run_isolated``): llama.cpp tokenizes, scores and greedily answers each text.

    Returns the GGUF's ``general.file_type`` and, per text: llama.cpp's prompt token ids, its greedy
    answer and the prompt's mean NLL per token under the GGUF.
    """
    import llama_cpp
    import numpy as np

    try:  # the same thread count for prompts (n_threads_batch): idle threads spin, which crawls on a busy CPU
        llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                              n_gpu_layers=0, seed=seed, logits_all=True, verbose=False)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"{gguf}: llama.cpp cannot load this file (truncated, corrupted or not a GGUF): {err}") from err
    rows = []
    try:
        ftype = int(llm.metadata.get("general.file_type", -1))
        add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        for text in texts:
            # What a server feeds llama.cpp: the rendered text, special tokens parsed, BOS added as the GGUF says.
            served = text[len(bos):] if add_bos and bos and text.startswith(bos) else text
            lids = llm.tokenize(served.encode(), add_bos=add_bos, special=True)
            llm.reset()
            llm.eval(lids)
            prompt_rows = np.array(llm.scores[: len(lids) - 1])
            answer: list[int] = []
            while len(answer) < max_new_tokens:
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                answer.append(token)
                if token in stop:
                    break
                llm.eval([token])
            targets = np.array(lids[1:])
            nll = float(-_log_softmax(prompt_rows)[np.arange(len(targets)), targets].mean())
            rows.append({"ids": [int(i) for i in lids], "answer": answer, "nll": nll})
    finally:
        llm.close()
    return ftype, rows


def verify_gguf(
    gguf: str | os.PathLike[str],
    merged_dir: str | os.PathLike[str],
    prompts: Sequence[str | list[dict[str, str]]],
    max_new_tokens: int = 32,
    *,
    model: Any = None,
    tokenizer: Any = None,
    tie_tolerance: float = 0.1,
    min_agreement: float = 0.75,
    threads: int | None = None,
    seed: int = 0,
) -> VerifyResult:
    """Check a GGUF against the merged HF model in llama.cpp (CPU, greedy): tokens, answers, agreement, NLL.

    ``prompts``: user messages or message lists (held-out ones). ``model``/``tokenizer`` reuse an
    already loaded merged model (else it is loaded in float32). ``threads``: llama.cpp's CPU threads for
    prompt and generation (default half the cores). See the module docstring for the rules.
    """
    clock = Stopwatch()
    import numpy as np
    import torch

    from labhelpers.deploy.native import run_isolated
    from labhelpers.models import load_model, load_tokenizer

    require_llama_cpp("verify_gguf")
    if not prompts:
        raise ValueError("prompts is empty: give a few held-out user messages to compare answers on.")
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} not found.")
    tokenizer = tokenizer or load_tokenizer(str(merged_dir))
    messages = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    hf_ids = [list(tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)["input_ids"])
              for m in messages]
    n_ctx = max(len(i) for i in hf_ids) + max_new_tokens + 16
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    model = model or load_model(str(merged_dir), dtype=torch.float32)
    eos = model.generation_config.eos_token_id
    stop = {t for t in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id] if t is not None}
    ftype, served = run_isolated(_llama_greedy, str(gguf), texts, tokenizer.bos_token or "", max_new_tokens,
                                 sorted(stop), threads, seed, n_ctx, what="verify_gguf", path=gguf)
    checks = []
    for msgs, ids, row in zip(messages, hf_ids, served, strict=True):
        lids, answer = row["ids"], row["answer"]
        with torch.no_grad():
            seq = torch.tensor([list(lids) + answer], device=model.device)
            logits = model(seq).logits[0].float().cpu().numpy()
        steps = logits[len(lids) - 1 : len(lids) - 1 + len(answer)]
        idx = np.arange(len(answer))
        margins = steps.max(axis=-1) - steps[idx, answer]  # 0 where HF's greedy choice is llama.cpp's token
        differs = steps.argmax(axis=-1) != np.array(answer)
        first = int(np.argmax(differs)) if differs.any() else None
        targets = np.array(lids[1:])
        checks.append(PromptCheck(
            prompt=msgs[-1]["content"], tokens_match=list(ids) == list(lids), n_prompt_tokens=len(ids),
            answer=answer, text=tokenizer.decode(answer, skip_special_tokens=True), first_divergence=first,
            divergence_margin=None if first is None else float(margins[first]),
            max_margin=float(margins[differs].max()) if differs.any() else 0.0,
            agreement=float(1 - differs.mean()),
            nll_hf=float(-_log_softmax(logits[: len(lids) - 1])[np.arange(len(targets)), targets].mean()),
            nll_gguf=row["nll"],
        ))
    lossless = ftype in LOSSLESS_FILE_TYPES
    if lossless:
        ok = all(c.tokens_match and c.max_margin <= tie_tolerance for c in checks)
    else:
        ok = all(c.tokens_match for c in checks) and sum(c.agreement for c in checks) / len(checks) >= min_agreement
    return VerifyResult(gguf, gguf_summary(gguf).file_type, lossless, ok, checks, tie_tolerance, min_agreement,
                        clock.seconds)
