"""The labs' datasets: find, validate, load (TRL conversational format), describe, convert.

Three kinds, each a JSONL file per split in ``data/`` (see data/README.md):

- ``sft``        ``{"messages": [user, assistant]}``
- ``preference`` ``{"prompt": [user], "chosen": [assistant], "rejected": [assistant]}``
- ``kto``        ``{"prompt": [user], "completion": [assistant], "label": true|false}``

Every row is checked before a ``datasets.Dataset`` is built; a bad row raises ``DataValidationError``
naming the file, the 1-based line and the field, so a learner's own data fails in the cell that
loads it and not twenty minutes into training.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from labhelpers.task import reference_answer

DATASET_KINDS = ("sft", "preference", "kto")
SPLITS = ("train", "heldout")
FIELDS = {
    "sft": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}
DATA_DIR_VAR = "LABS_DATA_DIR"
MAX_ERRORS = 20  # errors listed in one DataValidationError
LENGTH_RATIO_RANGE = (0.8, 1.25)  # chosen/rejected mean length outside this: the data teaches length, not quality
Messages = list[dict[str, str]]


class DataValidationError(ValueError):
    """Bad dataset content; each message line names the file (or source), the 1-based line and the field."""

    def __init__(self, errors: list[str], total: int | None = None):
        self.errors = list(errors)
        total = total if total is not None else len(errors)
        more = f"\n  ... and {total - len(errors)} more" if total > len(errors) else ""
        head = f"{total} problem(s) in the data:\n  " if total > 1 else ""
        super().__init__(head + "\n  ".join(self.errors) + more)


# ------------------------------------------------------------------------------------------- locations
def data_dir() -> Path:
    """The repository's ``data/`` folder, or ``$LABS_DATA_DIR`` when set."""
    env = os.environ.get(DATA_DIR_VAR)
    return Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "data"


def data_path(kind: str, split: str = "train") -> Path:
    """Path of a shipped file, e.g. ``data_path("kto", "heldout")`` -> ``data/kto_heldout.jsonl``."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(DATASET_KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use 'train' or 'heldout'")
    return data_dir() / f"{kind}_{split}.jsonl"


# ------------------------------------------------------------------------------------------- validation
def _messages(value: Any, field: str, last: str | None, single: str | None = None) -> list[tuple[str, str]]:
    """Problems of a message list: shape, keys, roles (system first, then user/assistant alternating)."""
    if not isinstance(value, list):
        return [(field, f"expected a list of {{'role', 'content'}} messages (TRL conversational format), "
                        f"got {type(value).__name__}")]
    if not value:
        return [(field, "empty message list")]
    if single and len(value) != 1:
        return [(field, f"expected exactly one {single} message, got {len(value)}")]
    problems: list[tuple[str, str]] = []
    prev = None
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if single:
            allowed = {single}
        elif i == 0:
            allowed = {"system", "user"}
        else:
            allowed = {"user"} if prev in ("system", "assistant") else {"assistant"}
        if not isinstance(msg, dict):
            problems.append((where, f"expected a message object, got {type(msg).__name__}"))
            prev = min(allowed)
            continue
        missing = [k for k in ("role", "content") if k not in msg]
        extra = sorted(set(msg) - {"role", "content"})
        if missing:
            problems.append((f"{where}.{missing[0]}", "missing"))
        if extra:
            problems.append((f"{where}.{extra[0]}", "unexpected field (a message has only role and content)"))
        role, content = msg.get("role"), msg.get("content")
        if "role" in msg and role not in allowed:
            want = " or ".join(repr(r) for r in sorted(allowed))
            problems.append((f"{where}.role", f"expected {want}, got {role!r}"))
        prev = role if role in allowed else ("user" if allowed == {"system", "user"} else min(allowed))
        if "content" in msg:
            if not isinstance(content, str):
                problems.append((f"{where}.content", f"expected a string, got {type(content).__name__}"))
            elif not content.strip():
                problems.append((f"{where}.content", "empty or whitespace-only text"))
    if last and not problems and value[-1].get("role") != last:
        problems.append((f"{field}[{len(value) - 1}].role", f"the last message must be {last!r}, got "
                                                             f"{value[-1].get('role')!r}"))
    return problems


def _same_reply(a: Messages, b: Messages) -> bool:
    return a[0]["content"].strip() == b[0]["content"].strip()


def row_problems(row: Any, kind: str) -> list[tuple[str, str]]:
    """(field, problem) pairs for one row of ``kind``; empty when the row is valid."""
    if not isinstance(row, dict):
        return [("<row>", f"expected a JSON object, got {type(row).__name__}")]
    fields = FIELDS[kind]
    problems = [(f, "missing") for f in fields if f not in row]
    only = f"unexpected field (a {kind} row has only {', '.join(fields)})"
    problems += [(f, only) for f in row if f not in fields]
    if "messages" in row:
        problems += _messages(row["messages"], "messages", last="assistant")
    if "prompt" in row:
        problems += _messages(row["prompt"], "prompt", last="user")
    for name in ("chosen", "rejected", "completion"):
        if name in row:
            problems += _messages(row[name], name, last=None, single="assistant")
    if kind == "preference" and not problems and _same_reply(row["chosen"], row["rejected"]):
        problems.append(("rejected", "identical to chosen: the pair teaches nothing"))
    if "label" in row and not isinstance(row["label"], bool):
        problems.append(("label", f"expected true or false (JSON boolean), got {row['label']!r}"))
    return problems


def validate_rows(rows: list[Any], kind: str, source: str = "<rows>", lines: list[int] | None = None) -> None:
    """Raise ``DataValidationError`` listing every bad row of ``kind`` (up to ``MAX_ERRORS``)."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(DATASET_KINDS)}")
    lines = lines or list(range(1, len(rows) + 1))
    errors = [f"{source}, line {n}, field '{field}': {msg}"
              for row, n in zip(rows, lines, strict=True) for field, msg in row_problems(row, kind)]
    if not rows:
        errors.append(f"{source}: no rows")
    if kind == "kto" and not errors:
        labels = {row["label"] for row in rows}
        if len(labels) == 1:
            only = "true (desirable)" if labels == {True} else "false (undesirable)"
            errors.append(f"{source}, field 'label': all {len(rows)} rows are {only}; KTO needs both labels")
    if errors:
        raise DataValidationError(errors[:MAX_ERRORS], total=len(errors))


BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: spreadsheet tools write it at the start of a "UTF-8" file


def _decoded_lines(path: Path) -> tuple[list[str], list[str]]:
    """The file's lines as text, and an error per line that is not UTF-8 (file, line, byte, the fix)."""
    data = path.read_bytes()
    data = data[len(BOM):] if data.startswith(BOM) else data  # accepted: it is UTF-8 with a marker
    lines, errors = [], []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            lines.append("")
            errors.append(f"{path}, line {n}, field '<text>': not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                          f"{exc.start + 1}); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)")
    return lines, errors


def read_jsonl(path: str | Path) -> tuple[list[Any], list[int]]:
    """The parsed rows of a JSONL file and their 1-based line numbers (blank lines skipped; a UTF-8 BOM accepted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, lines = [], []
    texts, errors = _decoded_lines(path)
    for n, text in enumerate(texts, start=1):
        if not text.strip():
            continue
        try:
            rows.append(json.loads(text))
            lines.append(n)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}, line {n}, field '<json>': malformed JSON ({exc.msg}, column {exc.colno})")
    if errors:
        raise DataValidationError(errors[:MAX_ERRORS], total=len(errors))
    return rows, lines


def read_rows(path: str | Path, kind: str) -> list[dict]:
    """Read and validate a JSONL file of ``kind``; return its rows."""
    return _read_rows(path, kind)[0]


def _read_rows(path: str | Path, kind: str) -> tuple[list[dict], list[int]]:
    rows, lines = read_jsonl(path)
    validate_rows(rows, kind, source=str(path), lines=lines)
    return rows, lines


# Where the rows of a Dataset load_lab_dataset returned came from, by the dataset's fingerprint: describe_dataset()
# names a row by its file and line. A dataset made from it (select, map) has another fingerprint: its rows are named
# by index.
_SOURCES: dict[str, tuple[str, list[int]]] = {}


def row_names(dataset: Any) -> list[str]:
    """A name per row for messages: ``"<file>, line N"`` for a dataset as load_lab_dataset returned it,
    else ``"row i"``."""
    source = _SOURCES.get(getattr(dataset, "_fingerprint", None))
    if source and len(source[1]) == len(dataset):
        return [f"{source[0]}, line {n}" for n in source[1]]
    return [f"row {i}" for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------- accessors
def prompt_messages(row: Mapping[str, Any]) -> Messages:
    """The conversation before the reply: what a model is asked to continue."""
    return list(row["prompt"]) if "prompt" in row else list(row["messages"][:-1])


def prompt_text(row: Mapping[str, Any]) -> str:
    """The last user message of a row (any kind)."""
    return [m for m in prompt_messages(row) if m["role"] == "user"][-1]["content"]


def _prompt_key(row: Mapping[str, Any]) -> str:
    text = " | ".join(m["content"] for m in prompt_messages(row))
    return re.sub(r"\s+", " ", text).strip().casefold()


def check_no_overlap(train_path: str | Path, heldout_path: str | Path) -> None:
    """Raise ``DataValidationError`` for each held-out row whose prompt also appears in the train file."""
    train_rows, train_lines = read_jsonl(train_path)
    seen = {}
    for row, n in zip(train_rows, train_lines, strict=True):
        seen.setdefault(_prompt_key(row), n)
    held_rows, held_lines = read_jsonl(heldout_path)
    errors = [f"{heldout_path}, line {n}, field 'prompt': also in {train_path} line {seen[_prompt_key(row)]} "
              f"(held-out prompts must not be trained on): {prompt_text(row)!r}"
              for row, n in zip(held_rows, held_lines, strict=True) if _prompt_key(row) in seen]
    if errors:
        raise DataValidationError(errors[:MAX_ERRORS], total=len(errors))


# ------------------------------------------------------------------------------------------- loading
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def load_lab_dataset(name_or_path: str | Path, kind: str | None = None, split: str = "train",
                     limit: int | None = None) -> Any:
    """Load ``"sft"|"preference"|"kto"`` (data/ files), a ``.jsonl`` path (give ``kind``) or a hub id.

    Every row is validated first; ``limit`` keeps the first N rows (the smoke profile's subset).
    Returns a ``datasets.Dataset`` in TRL's conversational format.
    """
    from datasets import Dataset

    name = str(name_or_path)
    source = None
    if name in DATASET_KINDS:
        if kind not in (None, name):
            raise ValueError(f"load_lab_dataset({name!r}, kind={kind!r}): the name already says the kind")
        kind, path = name, data_path(name, split)
        rows, lines = _read_rows(path, kind)
        source = str(path)
    elif kind not in DATASET_KINDS:
        raise ValueError(f"load_lab_dataset({name!r}): pass kind= one of {', '.join(DATASET_KINDS)} "
                         "for a file or hub id")
    elif Path(name).expanduser().is_file() or name.endswith(".jsonl") or not _HUB_ID.match(name):
        rows, lines = _read_rows(Path(name).expanduser(), kind)
        source = str(Path(name).expanduser())
    else:
        rows = _load_hub(name, kind, split)
        lines = list(range(1, len(rows) + 1))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit={limit}: must be at least 1")
        rows, lines = rows[:limit], lines[:limit]
        if kind == "kto" and len({r["label"] for r in rows}) == 1:
            raise DataValidationError([f"{name}, field 'label': the first {len(rows)} rows have one label "
                                       "only; KTO needs both (raise limit)"])
    dataset = Dataset.from_list(rows)
    if source is not None:
        _SOURCES[dataset._fingerprint] = (source, lines)
    return dataset


def _load_hub(name: str, kind: str, split: str) -> list[dict]:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError(f"{name!r} looks like a hub dataset id, but HF_HUB_OFFLINE=1 (the smoke profile "
                         f"is offline). Use a local .jsonl file with kind={kind!r}, or one of "
                         f"{', '.join(DATASET_KINDS)}.")
    from datasets import load_dataset

    rows = load_dataset(name, split=split).to_list()
    validate_rows(rows, kind, source=f"{name} [{split}] (line = row number)")
    return rows


# ------------------------------------------------------------------------------------------- describe
def _infer_kind(columns: Iterable[str]) -> str:
    cols = set(columns)
    for kind, fields in FIELDS.items():
        if set(fields) <= cols:
            return kind
    raise ValueError(f"cannot tell the dataset kind from columns {sorted(cols)}; pass kind=")


def _lengths(texts: list[str], tokenizer: Any) -> list[int]:
    if tokenizer is None:
        return [len(t.split()) for t in texts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _stats(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 1),
            "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def _named(names: list[str], limit: int = 5) -> str:
    return "; ".join(names[:limit]) + (f"; and {len(names) - limit} more" if len(names) > limit else "")


def describe_dataset(dataset: Any, tokenizer: Any = None, kind: str | None = None, max_length: int | None = None,
             verbose: bool = True) -> dict[str, Any]:
    """Print and return counts, lengths (tokens with a tokenizer, else words), label balance, length ratio.

    With a tokenizer and ``max_length``, the rows longer than ``max_length`` are named (file and line for a
    dataset as ``load_lab_dataset`` returned it), with a warning: their answer is cut; a row whose prompt alone
    fills ``max_length`` keeps no answer at all, and TRL drops it from training without a word.
    """
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    names = row_names(dataset) if hasattr(dataset, "_fingerprint") else [f"row {i}" for i in range(len(rows))]
    if not rows:
        raise ValueError("describe_dataset() got an empty dataset")
    kind = kind or _infer_kind(rows[0])
    unit = "tokens" if tokenizer is not None else "words"
    keys = [_prompt_key(r) for r in rows]
    info: dict[str, Any] = {"kind": kind, "rows": len(rows), "unit": unit,
                            "duplicate_prompts": len(keys) - len(set(keys)), "warnings": []}
    if tokenizer is not None:
        convs = [prompt_messages(r) + [{"role": "assistant", "content": reply_text(r)}] for r in rows]
        texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
        seq = _lengths(texts, tokenizer)
        info["sequence_length"] = _stats(seq)
        if max_length is not None:
            prompts = [tokenizer.apply_chat_template(prompt_messages(r), tokenize=False, add_generation_prompt=True)
                       for r in rows]  # fmt: skip
            cut = [names[i] for i, n in enumerate(seq) if n > max_length]
            no_answer = [names[i] for i, n in enumerate(_lengths(prompts, tokenizer)) if n >= max_length]
            info.update(longer_than_max_length=len(cut), longer_rows=cut, answer_cut_off_rows=no_answer)
            if no_answer:
                info["warnings"].append(
                    f"{len(no_answer)} row(s) whose prompt alone fills max_length={max_length}: no answer token is "
                    f"left, so TRL drops them from training ({_named(no_answer)}); shorten their prompts or raise "
                    "max_length")
            if len(cut) > len(no_answer):
                info["warnings"].append(
                    f"{len(cut)} row(s) longer than max_length={max_length}: the end of their answer is cut "
                    f"({_named(cut)}); the model never learns how they end")
    info["prompt_length"] = _stats(_lengths([prompt_text(r) for r in rows], tokenizer))
    if kind == "preference":
        chosen = _lengths([r["chosen"][0]["content"] for r in rows], tokenizer)
        rejected = _lengths([r["rejected"][0]["content"] for r in rows], tokenizer)
        ratio = statistics.fmean(chosen) / max(statistics.fmean(rejected), 1e-9)
        info.update(chosen_length=_stats(chosen), rejected_length=_stats(rejected), length_ratio=round(ratio, 3))
        if not LENGTH_RATIO_RANGE[0] <= ratio <= LENGTH_RATIO_RANGE[1]:
            info["warnings"].append(
                f"chosen/rejected mean length ratio {ratio:.2f} is outside {LENGTH_RATIO_RANGE[0]}-"
                f"{LENGTH_RATIO_RANGE[1]}: the model can learn to prefer length instead of quality (length bias)")
    else:
        info["answer_length"] = _stats(_lengths([reply_text(r) for r in rows], tokenizer))
    if kind == "kto":
        good = sum(bool(r["label"]) for r in rows)
        info.update(desirable=good, undesirable=len(rows) - good, desirable_share=round(good / len(rows), 3))
        if good in (0, len(rows)):
            info["warnings"].append("only one KTO label present: KTO needs desirable and undesirable rows")
    if info["duplicate_prompts"] and kind != "kto":
        info["warnings"].append(f"{info['duplicate_prompts']} duplicate prompt(s)")
    if verbose:
        print(_summary(info))
    return info


def reply_text(row: Mapping[str, Any]) -> str:
    """The assistant text of a row: the SFT answer, the preference chosen, the KTO completion (any label)."""
    if "completion" in row:
        return row["completion"][-1]["content"]
    return reference_answer(row)


def _summary(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']} dataset: {info['rows']} rows, lengths in {info['unit']}"]
    for key in ("sequence_length", "prompt_length", "answer_length", "chosen_length", "rejected_length"):
        if key in info:
            s = info[key]
            lines.append(f"  {key:<16} min {s['min']}, mean {s['mean']}, median {s['median']}, "
                         f"p95 {s['p95']}, max {s['max']}")
    if "longer_than_max_length" in info:
        cut = info["longer_rows"]
        lines.append(f"  rows longer than max_length: {len(cut)}" + (f" ({_named(cut)})" if cut else ""))
    if "length_ratio" in info:
        lines.append(f"  chosen/rejected mean length ratio: {info['length_ratio']:.2f} (aim for 0.8-1.25)")
    if "desirable" in info:
        lines.append(f"  labels: {info['desirable']} desirable / {info['undesirable']} undesirable "
                     f"({info['desirable_share']:.0%} desirable)")
    lines.append(f"  duplicate prompts: {info['duplicate_prompts']}")
    lines += [f"  WARNING: {w}" for w in info["warnings"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- convert
def preference_to_kto(dataset: Any) -> Any:
    """Each preference pair -> a desirable KTO row (chosen) then an undesirable one (rejected)."""
    from datasets import Dataset

    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return Dataset.from_list(out)

