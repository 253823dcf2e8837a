"""Measure a model before and after training: held-out answer loss, preference accuracy/margins, side by side.

Every score is computed on the answer tokens only, with the prompt rendered by the tokenizer's own chat
template (the same way TRL builds the training rows), without gradients and in a fixed order, so the
same model and data always give the same number.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Messages = list[dict[str, str]]


def _as_messages(value: Any, role: str) -> Messages:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def chat_tokens(tokenizer: Any, prompt: Any, completion: Any) -> tuple[list[int], list[int]]:
    """Token ids of prompt + completion through the chat template, and a 0/1 mask of the completion tokens.

    The completion starts where the rendered prompt (with the generation prompt) and the rendered whole
    conversation stop agreeing, as in TRL's SFT/DPO tokenisation.
    """
    prompt_msgs = _as_messages(prompt, "user")
    full_msgs = prompt_msgs + _as_messages(completion, "assistant")
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(full_msgs, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    return ids, [0] * start + [1] * (len(ids) - start)


def split_row(row: dict[str, Any], idx: int) -> tuple[Any, Any]:
    """(prompt, completion) of an SFT row: ``messages`` (last = the answer) or ``prompt`` + ``completion``."""
    if "messages" in row:
        msgs = row["messages"]
        if len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise ValueError(f"row {idx}, field 'messages': the last of at least two messages must be the assistant's.")
        return msgs[:-1], msgs[-1:]
    if "prompt" in row and "completion" in row:
        return row["prompt"], row["completion"]
    raise ValueError(f"row {idx}: expected a 'messages' field or 'prompt' + 'completion' fields, got {sorted(row)}.")


def _encode(
    tokenizer: Any, pairs: Sequence[tuple[Any, Any]], max_length: int | None
) -> list[tuple[list[int], list[int]]]:
    """``chat_tokens`` of every (prompt, completion), truncated to ``max_length``; a row with no answer left raises."""
    encoded = []
    for idx, (prompt, completion) in enumerate(pairs):
        ids, mask = chat_tokens(tokenizer, prompt, completion)
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        if sum(mask[1:]) == 0:
            raise ValueError(
                f"row {idx}: no answer tokens left "
                f"(the prompt fills max_length={max_length}, or the answer is empty)."
            )
        encoded.append((ids, mask))
    return encoded


def _takes(model: Any, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


@torch.no_grad()
def token_logps(model: Any, sequences: Sequence[Sequence[int]], last: int | None = None) -> list[torch.Tensor]:
    """log p(token t | the tokens before it) for t = 1..n-1 of each sequence: one padded forward pass, eval mode.

    The sequences are padded on the left, so they all end in the last column, and their positions count from each
    one's first real token (as if it were alone). With ``last``, only the log-probs of each sequence's last
    ``last`` tokens are returned, and the output layer runs on those positions only (an answer's tokens: a
    prompt's logits are never needed). Each tensor is fp32 on the CPU. The brick of every score here and of a
    loss by hand: mask these as a trainer does (answer tokens only, or every token for ORPO's NLL term), then sum
    or average them.
    """
    rows = [list(s) for s in sequences]
    if not rows or min(len(r) for r in rows) < 2:
        raise ValueError("token_logps: every sequence needs at least 2 tokens (one to predict from).")
    width = max(len(r) for r in rows)
    keep = width - 1 if last is None else min(last, width - 1)
    device = next(model.parameters()).device
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    ids, mask = ids.to(device), mask.to(device)
    extra = {"logits_to_keep": keep + 1} if _takes(model, "logits_to_keep") else {}
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       use_cache=False, **extra).logits[:, -(keep + 1):-1]
    finally:
        if was_training:
            model.train()
    targets = ids[:, -keep:]
    out = []
    for i, row in enumerate(rows):
        n = min(keep, len(row) - 1)  # fp32 one row at a time: small even for a 128k vocabulary
        row_logps = logits[i, keep - n:].float().log_softmax(-1)
        out.append(row_logps.gather(-1, targets[i, keep - n:, None]).squeeze(-1).cpu())
    return out


def _answer_logps(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[Any, Any]], max_length: int | None, batch_size: int
) -> list[tuple[float, int]]:
    """(sum of answer-token log-probs, answer-token count) per (prompt, completion), in input order.

    Each batch is one padded forward pass over prompt + answer (as TRL scores a pair's chosen and rejected
    answers), with sequences of similar length batched together so that little of it is padding.
    """
    encoded = _encode(tokenizer, pairs, max_length)
    answer_len = [min(sum(mask), len(ids) - 1) for ids, mask in encoded]  # the answer is the sequence's end
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        logps = token_logps(model, [encoded[i][0] for i in batch], last=max(answer_len[i] for i in batch))
        for i, row in zip(batch, logps, strict=True):
            results[i] = (float(row[-answer_len[i]:].sum()), answer_len[i])
    return results


def heldout_loss(model: Any, tokenizer: Any, dataset: Any, max_length: int | None = None, batch_size: int = 8) -> float:
    """Mean negative log-likelihood per answer token on held-out SFT rows (prompt tokens masked out)."""
    rows = list(dataset)
    if not rows:
        raise ValueError("heldout_loss: the dataset is empty.")
    scores = _answer_logps(model, tokenizer, [split_row(r, i) for i, r in enumerate(rows)], max_length, batch_size)
    total = sum(s for s, _ in scores)
    count = sum(n for _, n in scores)
    return -total / count


def completion_logps(
    model: Any, tokenizer: Any, dataset: Any, batch_size: int = 8, max_length: int | None = None
) -> list[float]:
    """Each row's summed answer-token log-prob, log p(completion | prompt), scored in batches (input order).

    Rows are ``prompt`` + ``completion`` (KTO's unpaired rows; ``label`` is ignored) or ``messages``. This is
    the per-answer quantity KTO's implicit reward is built on: score it with the adapter on (policy) and off
    (reference) to recompute the trainer's loss by hand.
    """
    rows = list(dataset)
    if not rows:
        raise ValueError("completion_logps: the dataset is empty.")
    pairs = [split_row(r, i) for i, r in enumerate(rows)]
    return [total for total, _ in _answer_logps(model, tokenizer, pairs, max_length, batch_size)]


def preference_pairs(
    model: Any, tokenizer: Any, dataset: Any, batch_size: int = 8, max_length: int | None = None
) -> list[dict[str, float]]:
    """Each preference pair's answer log-probs and margins, scored in batches (input order).

    Per pair: ``chosen_logp``/``rejected_logp`` (sum over answer tokens), ``margin`` (their difference,
    the quantity DPO's implicit reward is built on) and ``margin_per_token`` (difference of the means per
    token: SimPO's length-normalised reward, blind to answer length). A PEFT model is scored with its
    adapter on. Labs compare pairs before and after training with it; ``preference_metrics`` averages it.
    """
    rows = list(dataset)
    if not rows:
        raise ValueError("preference_pairs: the dataset is empty.")
    pairs = []
    for idx, row in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"row {idx}: preference rows need 'prompt', 'chosen', 'rejected'; missing {missing}.")
        pairs += [(row["prompt"], row["chosen"]), (row["prompt"], row["rejected"])]
    scores = _answer_logps(model, tokenizer, pairs, max_length, batch_size)
    return [
        {
            "chosen_logp": c[0],
            "rejected_logp": r[0],
            "margin": c[0] - r[0],
            "margin_per_token": c[0] / c[1] - r[0] / r[1],
            "log_odds_ratio": log_odds_ratio(c[0] / c[1], r[0] / r[1]),
        }
        for c, r in zip(scores[0::2], scores[1::2], strict=True)
    ]


def log_odds_ratio(mean_chosen: float, mean_rejected: float) -> float:
    """ORPO's log odds ratio from each answer's mean log-prob per token m: p = e^m, odds = p / (1 - p).

    log odds(chosen) - log odds(rejected) = (m_c - m_r) - (log(1 - e^m_c) - log(1 - e^m_r)). Its sign is the
    per-token margin's; how much it moves is not: a pair whose answers are both likely weighs more.
    """
    def log1m_exp(m: float) -> float:  # log(1 - e^m), finite even where float rounding gives m = 0 (p = 1)
        return math.log(-math.expm1(min(m, -1e-12)))

    return (mean_chosen - mean_rejected) - (log1m_exp(mean_chosen) - log1m_exp(mean_rejected))


def summarize_pairs(pairs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over ``preference_pairs`` output: accuracy/margin summed and per token, log-probs, ``n``."""
    if not pairs:
        raise ValueError("summarize_pairs: no pairs.")
    n = len(pairs)
    return {
        "accuracy": sum(p["margin"] > 0 for p in pairs) / n,
        "margin": sum(p["margin"] for p in pairs) / n,
        "accuracy_per_token": sum(p["margin_per_token"] > 0 for p in pairs) / n,
        "margin_per_token": sum(p["margin_per_token"] for p in pairs) / n,
        "log_odds_ratio": sum(p["log_odds_ratio"] for p in pairs) / n,
        "chosen_logp": sum(p["chosen_logp"] for p in pairs) / n,
        "rejected_logp": sum(p["rejected_logp"] for p in pairs) / n,
        "n": n,
    }


def preference_metrics(
    model: Any, tokenizer: Any, dataset: Any, batch_size: int = 8, max_length: int | None = None
) -> dict[str, float]:
    """How often, and by how much, the model prefers the chosen answer to the rejected one.

    Log-probability of each answer given the prompt (answer tokens only): ``accuracy``/``margin`` use the
    sum (the quantity DPO's implicit reward is built on), ``accuracy_per_token``/``margin_per_token`` the
    mean per token (SimPO's length-normalised reward, blind to answer length). A PEFT model is scored with
    its adapter on.
    """
    return summarize_pairs(preference_pairs(model, tokenizer, dataset, batch_size, max_length))


def _clip(text: Any, width: int | None) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if width is None or len(text) <= width else text[: max(width - 1, 1)] + "…"


def side_by_side(
    prompts: Sequence[Any],
    before: Sequence[str],
    after: Sequence[str],
    reference: Sequence[str] | None = None,
    width: int | None = 80,
    as_text: bool = False,
) -> Any:
    """Before/after generations per prompt (and the reference) as a pandas DataFrame, or a text table."""
    columns = {"prompt": prompts, "before": before, "after": after}
    if reference is not None:
        columns["reference"] = reference
    sizes = {name: len(values) for name, values in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"side_by_side: every column needs one entry per prompt, got lengths {sizes}.")
    prompt_text = [p if isinstance(p, str) else _as_messages(p, "user")[-1]["content"] for p in prompts]
    table = {"prompt": prompt_text, **{k: list(v) for k, v in columns.items() if k != "prompt"}}
    table = {k: [_clip(x, width) for x in v] for k, v in table.items()}
    if as_text:
        widths = {k: max([len(k)] + [len(x) for x in v]) for k, v in table.items()}
        lines = [" | ".join(k.ljust(widths[k]) for k in table), "-+-".join("-" * widths[k] for k in table)]
        lines += [" | ".join(table[k][i].ljust(widths[k]) for k in table) for i in range(len(prompt_text))]
        return "\n".join(lines)
    import pandas as pd

    return pd.DataFrame(table)


# ------------------------------------------------------------------------ sampled groups (GRPO, lab 12)
RewardFunc = Callable[..., list[float]]


@dataclass
class SampledGroups:
    """``k`` completions per held-out prompt, sampled once from the starting policy with a trainer's sampler.

    ``rewards`` are the weighted sums of the reward functions, ``logps`` each completion's summed log-prob
    (through the chat template, its end-of-turn token included) under the policy that sampled it. ``seconds``
    is the sampling time of ``decode_steps`` decoding steps at ``rows`` rows: the decode rate a GRPO time
    estimate needs, measured on this machine.
    """

    prompts: list[Any]
    completions: list[list[str]]
    rewards: list[list[float]]
    logps: list[list[float]]
    lengths: list[list[int]]  # each sample's scored tokens (its answer through the chat template)
    seconds: float
    decode_steps: int
    rows: int

    @property
    def k(self) -> int:
        return len(self.completions[0])

    @property
    def zero_spread(self) -> float:
        """Share of prompts whose ``k`` rewards are all equal: GRPO's advantage is 0 for every one of them."""
        return sum(len(set(r)) == 1 for r in self.rewards) / len(self.rewards)

    @property
    def expected_reward(self) -> list[float]:
        """Per prompt, the mean reward of its samples (the sampling policy's expected reward, estimated)."""
        return [sum(r) / len(r) for r in self.rewards]

    def _pairs(self) -> list[tuple[Any, Any]]:
        return [(p, c) for p, group in zip(self.prompts, self.completions, strict=True) for c in group]

    def rescore(self, model: Any, tokenizer: Any, batch_size: int = 16) -> list[list[float]]:
        """Each sample's summed log-prob under ``model`` (the trained policy), grouped like ``logps``."""
        new = [s for s, _ in _answer_logps(model, tokenizer, self._pairs(), None, batch_size)]
        return [new[g * self.k : (g + 1) * self.k] for g in range(len(self.rewards))]

    def reweighted(self, new_logps: list[list[float]]) -> list[float]:
        """Per prompt, the new policy's expected reward estimated from the same samples (self-normalised importance
        sampling): sum_i w_i r_i / sum_i w_i with w_i = p_new(c_i) / p_sampler(c_i) (``new_logps``: ``rescore``).
        No new sampling, so no sampling noise between before and after; a prompt whose samples all score the same
        cannot move (zero spread). Summed log-probs: a change that lowers every token's log-prob a little lowers
        long samples' weights most (and the answers that run out of tokens are format failures), so this estimate
        can rise without any reward signal; ``margins`` cannot."""
        out = []
        for rewards, old, new in zip(self.rewards, self.logps, new_logps, strict=True):
            log_w = [n - o for n, o in zip(new, old, strict=True)]
            top = max(log_w)
            w = [math.exp(x - top) for x in log_w]
            out.append(sum(a * r for a, r in zip(w, rewards, strict=True)) / sum(w))
        return out

    def margins(self, logps: list[list[float]] | None = None) -> list[float]:
        """Per prompt, sum_i (r_i - mean r) x (log-prob per token of c_i) under ``logps`` (default: the sampler's):
        how much a policy prefers the group's better samples, per token. Trained minus before > 0: the policy
        raised its better samples relative to its worse ones. Per token, so a drift of every token's log-prob by
        the same amount moves no margin, whatever the samples' lengths; 0 for a prompt without spread."""
        logps = self.logps if logps is None else logps
        out = []
        for rewards, lps, lengths in zip(self.rewards, logps, self.lengths, strict=True):
            mean = sum(rewards) / len(rewards)
            out.append(sum((r - mean) * lp / n for r, lp, n in zip(rewards, lps, lengths, strict=True)))
        return out


def sample_groups(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], reward_funcs: Sequence[RewardFunc],
                  weights: Sequence[float], k: int, max_new_tokens: int, *, temperature: float = 1.0,
                  seed: int = 0, batch_size: int = 64) -> SampledGroups:
    """Sample ``k`` completions per row's ``prompt`` (TRL GRPO's sampler: ``temperature``, top_p 1, top_k 0),
    score them with TRL-style reward functions (``f(completions, **columns) -> list[float]``, completions as
    message lists, the rows' other columns as keyword lists) weighted by ``weights``, and their log-probs."""
    import time

    from labhelpers.models import generate

    if len(reward_funcs) != len(weights):
        raise ValueError(f"sample_groups: {len(reward_funcs)} reward functions but {len(weights)} weights.")
    rows = list(rows)
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"sample_groups: row {i} has no 'prompt' field (fields: {sorted(row)}).")
    prompts = [row["prompt"] for row in rows for _ in range(k)]
    start = time.perf_counter()
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     do_sample=True, temperature=temperature, top_k=0, top_p=1.0, seed=seed)
    seconds = time.perf_counter() - start
    columns = {key: [row[key] for row in rows for _ in range(k)] for key in rows[0] if key != "prompt"}
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    totals = [0.0] * len(texts)
    for func, weight in zip(reward_funcs, weights, strict=True):
        for i, value in enumerate(func(completions=completions, prompts=prompts, **columns)):
            totals[i] += weight * float(value)
    scored = _answer_logps(model, tokenizer, list(zip(prompts, texts, strict=True)), None, 16)
    group = lambda xs: [list(xs[i * k : (i + 1) * k]) for i in range(len(rows))]  # noqa: E731
    calls = math.ceil(len(prompts) / batch_size)
    return SampledGroups(prompts=[row["prompt"] for row in rows], completions=group(texts), rewards=group(totals),
                         logps=group([s for s, _ in scored]), lengths=group([n for _, n in scored]), seconds=seconds,
                         decode_steps=calls * max_new_tokens, rows=min(batch_size, len(prompts)))


# ---------------------------------------------------------------------------------------------- score cache
def weights_fingerprint(model: Any) -> str:
    """A short hash of every parameter's name, shape, dtype and sums: equal for the same weights, different once
    an adapter has trained (reading the weights once costs well under a second for the embedded model)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = param.detach().double()
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}{float(values.sum())!r}"
                          f"{float(values.abs().sum())!r}".encode())
    return digest.hexdigest()[:16]


def source_hash(*code: Any) -> str:
    """A short hash of the source of ``code`` (modules, functions, classes): editing any of it changes it."""
    return hashlib.sha256("\0".join(inspect.getsource(c) for c in code).encode()).hexdigest()[:16]


def cached(lab: Any, kind: str, key: Sequence[Any], compute: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    """``compute()``'s scores, kept in ``outputs/<profile>/cache/<kind>/`` under a hash of ``key``.

    The key holds the weights' fingerprint, the scoring code's hash, the rows and the settings, so scores are read
    back only for the same weights scored the same way: labs that start from the same model score it once and the
    others read the numbers back (said in one printed line). The file is written atomically.
    """
    digest = hashlib.sha256(json.dumps(list(key), sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = lab.output_dir / "cache" / kind / f"{digest}.json"
    if path.is_file():
        print(f"(the same weights were scored on these {what} before: read from {path})")
        return json.loads(path.read_text())
    scores = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(scores))
    tmp.replace(path)  # atomic: a half-written file is never read back
    return scores
