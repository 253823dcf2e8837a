"""The shipped datasets and labhelpers.data: schema, sizes, balance, reproducibility, validation errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from labhelpers import profiles
from labhelpers.data import (
    DATASET_KINDS,
    SPLITS,
    DataValidationError,
    check_no_overlap,
    data_dir,
    data_path,
    describe_dataset,
    load_lab_dataset,
    preference_to_kto,
    prompt_messages,
    prompt_text,
    read_rows,
)
from labhelpers.task import cited_lab, format_ok

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "data" / "build_datasets.py"
MIN_ROWS = {("sft", "train"): 1000, ("sft", "heldout"): 100, ("preference", "train"): 500,
            ("preference", "heldout"): 100, ("kto", "train"): 1000, ("kto", "heldout"): 100}
SMOKE = profiles._SMOKE


def rows(kind: str, split: str) -> list[dict]:
    return read_rows(data_path(kind, split), kind)


def reply(row: dict) -> str:
    if "messages" in row:
        return row["messages"][-1]["content"]
    return (row.get("chosen") or row["completion"])[0]["content"]


def u(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def a(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write(tmp_path: Path, name: str, lines: list) -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# ------------------------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("kind, split", [(k, s) for k in DATASET_KINDS for s in SPLITS])
def test_shipped_file_is_valid_and_big_enough(kind, split):
    data = rows(kind, split)
    assert len(data) >= MIN_ROWS[kind, split]


@pytest.mark.parametrize("kind, split", [(k, s) for k in DATASET_KINDS for s in SPLITS])
def test_shipped_file_has_no_duplicate_prompts(kind, split):
    counts = Counter(prompt_text(r).strip().casefold() for r in rows(kind, split))
    assert [p for p, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_heldout_prompts_never_appear_in_train(kind):
    check_no_overlap(data_path(kind, "train"), data_path(kind, "heldout"))


def test_no_heldout_prompt_or_answer_of_any_kind_is_in_any_train_file():
    train_prompts = {prompt_text(r) for k in DATASET_KINDS for r in rows(k, "train")}
    train_answers = {reply(r) for k in DATASET_KINDS for r in rows(k, "train")}
    for kind in DATASET_KINDS:
        held = rows(kind, "heldout")
        assert not {prompt_text(r) for r in held} & train_prompts
        assert not {reply(r) for r in held if r.get("label", True)} & train_answers


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_every_reference_answer_has_the_task_format(kind):
    for split in SPLITS:
        assert all(format_ok(reply(r)) for r in rows(kind, split))


def test_preference_lengths_are_not_confounded():
    for split in SPLITS:
        info = describe_dataset(load_lab_dataset("preference", split=split), verbose=False)
        assert 0.8 <= info["length_ratio"] <= 1.25 and info["warnings"] == []
        for r in rows("preference", split):
            assert 0.67 <= len(r["chosen"][0]["content"]) / len(r["rejected"][0]["content"]) <= 1.5


def test_rejected_answers_are_wrong_in_substance_not_only_in_wording():
    """Each rejected answer breaks the format, cites another lab, or states something else."""
    for r in rows("preference", "train"):
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert (not format_ok(rejected) or cited_lab(rejected) != cited_lab(chosen)
                or rejected.split("\n")[0] != chosen.split("\n")[0])


def test_kto_files_have_both_labels_about_55_45():
    for split in SPLITS:
        share = sum(r["label"] for r in rows("kto", split)) / len(rows("kto", split))
        assert 0.5 <= share <= 0.6


def test_first_rows_cover_every_lab_and_both_kto_labels():
    """The smoke profile trains on the first rows only: they must be representative."""
    for kind, n in (("sft", SMOKE["sft_train_rows"]), ("preference", SMOKE["pref_train_rows"]),
                    ("kto", SMOKE["kto_train_rows"])):
        head = [r for r in rows(kind, "train")[:n] if r.get("label", True)]
        assert {cited_lab(reply(r)) for r in head} == set(range(11)), kind
    kto_head = rows("kto", "train")[:SMOKE["kto_train_rows"]]
    assert 0.45 <= sum(r["label"] for r in kto_head) / len(kto_head) <= 0.65
    held = rows("sft", "heldout")[:SMOKE["eval_rows"]]
    assert len({cited_lab(reply(r)) for r in held}) >= 9


def test_build_script_check_passes_on_the_shipped_files():
    result = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_script_is_deterministic_and_check_detects_drift(tmp_path):
    subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path)], check=True, capture_output=True)
    for kind in DATASET_KINDS:
        for split in SPLITS:
            assert (tmp_path / f"{kind}_{split}.jsonl").read_bytes() == data_path(kind, split).read_bytes()
    (tmp_path / "kto_train.jsonl").write_text("{}\n")
    result = subprocess.run([sys.executable, str(BUILD), "--check", "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "kto_train.jsonl" in result.stderr


def test_readme_row_counts_match_the_files():
    readme = (ROOT / "data" / "README.md").read_text()
    for kind in DATASET_KINDS:
        for split in SPLITS:
            name = f"{kind}_{split}.jsonl"
            match = re.search(rf"`{name}`\s*\|\s*([\d,]+)", readme)
            assert match, f"data/README.md has no table row for {name}"
            assert int(match.group(1).replace(",", "")) == len(rows(kind, split))


def test_reference_answers_fit_the_smoke_generation_budget(tokenizer):
    """Held-out answers must fit in eval_max_new_tokens, or a perfect model would fail the format check."""
    tok = tokenizer  # the embedded model's (the fixture materialises it; a failure there fails the test)
    texts = {reply(r) for k in ("sft",) for s in SPLITS for r in rows(k, s)}
    longest = max(len(ids) for ids in tok(sorted(texts), add_special_tokens=False)["input_ids"])
    assert longest + 1 <= SMOKE["eval_max_new_tokens"]


# ------------------------------------------------------------------------------------------- loading
def test_load_lab_dataset_returns_trl_conversational_columns():
    assert load_lab_dataset("sft", limit=3).column_names == ["messages"]
    pref = load_lab_dataset("preference", split="heldout", limit=3)
    assert pref.column_names == ["prompt", "chosen", "rejected"]
    kto = load_lab_dataset("kto", limit=10)
    assert kto.column_names == ["prompt", "completion", "label"] and len(kto) == 10
    assert isinstance(kto[0]["label"], bool)


def test_limit_takes_the_first_rows():
    assert load_lab_dataset("sft", limit=5)[:] == load_lab_dataset("sft")[:5]


def test_load_a_jsonl_path_needs_a_kind(tmp_path):
    path = write(tmp_path, "mine.jsonl", [{"messages": u("q") + a("Answer: x\nLab: 3.1.1")}])
    assert len(load_lab_dataset(path, kind="sft")) == 1
    with pytest.raises(ValueError, match="pass kind= one of sft, preference, kto"):
        load_lab_dataset(path)


def test_a_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="looks like a hub dataset id, but HF_HUB_OFFLINE=1"):
        load_lab_dataset("someone/prefs", kind="preference")


def test_missing_file_and_bad_split_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        load_lab_dataset(tmp_path / "nope.jsonl", kind="sft")
    with pytest.raises(ValueError, match="split='test': use 'train' or 'heldout'"):
        data_path("sft", "test")


def test_labs_data_dir_overrides_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA_DIR", str(tmp_path))
    write(tmp_path, "sft_train.jsonl", [{"messages": u("q") + a("Answer: x\nLab: 3.1.1")}])
    assert data_dir() == tmp_path and len(load_lab_dataset("sft")) == 1


def test_accessors_give_the_prompt_of_any_kind():
    sft = {"messages": u("hello") + a("Answer: x\nLab: 3.1.1")}
    kto = {"prompt": u("hi"), "completion": a("y"), "label": False}
    assert prompt_messages(sft) == u("hello") and prompt_text(sft) == "hello"
    assert prompt_messages(kto) == u("hi") and prompt_text(kto) == "hi"


# ------------------------------------------------------------------------------------------- validation
def error_of(tmp_path, kind, lines, name="bad.jsonl") -> str:
    path = write(tmp_path, name, lines)
    with pytest.raises(DataValidationError) as info:
        load_lab_dataset(path, kind=kind)
    return str(info.value)


GOOD_PREF = {"prompt": u("q"), "chosen": a("Answer: yes\nLab: 3.1.6"),
             "rejected": a("Answer: no\nLab: 3.1.6")}


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_the_fix(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"messages": u("q") + a("Answer: x\nLab: 3.1.1")}, ensure_ascii=False)
    bad = json.dumps({"messages": u("Qué es LoRA?") + a("Answer: x\nLab: 3.1.1")}, ensure_ascii=False)
    path.write_bytes((good + "\n" + bad + "\n").encode("latin-1"))  # what a Windows editor saves as "ANSI"
    with pytest.raises(DataValidationError) as err:
        load_lab_dataset(path, kind="sft")
    msg = str(err.value)
    assert f"{path}, line 2, field '<text>': not UTF-8 (byte 0xe9 at column" in msg and "save the file as UTF-8" in msg
    assert "line 1" not in msg  # the valid line is not blamed


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "excel.jsonl"
    row = {"messages": u("Qué es LoRA?") + a("Answer: x\nLab: 3.1.1")}
    # spreadsheet tools
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row, ensure_ascii=False) + "\r\n").encode("utf-8"))
    assert load_lab_dataset(path, kind="sft")[0]["messages"] == row["messages"]


def test_rows_max_length_cuts_are_named_with_file_and_line(tmp_path, tokenizer):
    long_prompt = "Please explain this in detail. " * 60  # ~360 tokens: fills max_length by itself
    lines = [{"messages": u("Which lab covers DPO?") + a("Answer: it does.\nLab: 3.1.6")},
             {"messages": u(long_prompt) + a("Answer: a long one.\nLab: 3.1.3")},
             {"messages": u("Which lab covers DPO? " * 4) + a("Answer: " + "word " * 80 + "\nLab: 3.1.6")}]
    path = write(tmp_path, "mine.jsonl", lines)
    info = describe_dataset(load_lab_dataset(path, kind="sft"), tokenizer=tokenizer, max_length=128, verbose=False)
    assert info["answer_cut_off_rows"] == [f"{path}, line 2"]
    assert info["longer_rows"] == [f"{path}, line 2", f"{path}, line 3"] and info["longer_than_max_length"] == 2
    dropped, cut = info["warnings"]
    assert "prompt alone fills max_length=128" in dropped and "TRL drops them from training" in dropped
    assert f"{path}, line 2" in dropped and f"{path}, line 3" not in dropped
    assert "2 row(s) longer than max_length=128" in cut and f"{path}, line 3" in cut
    # a dataset made from it (select, map) has lost its file: its rows are named by index
    again = describe_dataset(load_lab_dataset(path, kind="sft").select([1, 2]), tokenizer=tokenizer, max_length=128,
                     verbose=False)  # fmt: skip
    assert again["longer_rows"] == ["row 0", "row 1"]


def test_malformed_json_names_file_and_line(tmp_path):
    msg = error_of(tmp_path, "preference", [GOOD_PREF, '{"prompt": [}'])
    assert "bad.jsonl, line 2, field '<json>': malformed JSON" in msg


def test_missing_field(tmp_path):
    row = {k: v for k, v in GOOD_PREF.items() if k != "chosen"}
    assert "bad.jsonl, line 1, field 'chosen': missing" in error_of(tmp_path, "preference", [row])


def test_unexpected_extra_field(tmp_path):
    msg = error_of(tmp_path, "preference", [GOOD_PREF, {**GOOD_PREF, "score": 3}])
    assert "line 2, field 'score': unexpected field" in msg


def test_wrong_type_of_messages(tmp_path):
    msg = error_of(tmp_path, "sft", [{"messages": "Q: hi A: hello"}])
    assert "line 1, field 'messages': expected a list of {'role', 'content'} messages" in msg


def test_wrong_role(tmp_path):
    msg = error_of(tmp_path, "sft", [{"messages": u("q") + u("again")}])
    assert "line 1, field 'messages[1].role': expected 'assistant', got 'user'" in msg


def test_conversation_must_end_with_the_assistant(tmp_path):
    msg = error_of(tmp_path, "sft", [{"messages": u("q") + a("x") + u("more")}])
    assert "field 'messages[2].role': the last message must be 'assistant', got 'user'" in msg


def test_chosen_must_be_one_assistant_message(tmp_path):
    msg = error_of(tmp_path, "preference", [{**GOOD_PREF, "chosen": u("Answer: yes\nLab: 3.1.6")}])
    assert "line 1, field 'chosen[0].role': expected 'assistant', got 'user'" in msg
    msg = error_of(tmp_path, "preference", [{**GOOD_PREF, "rejected": a("x") + a("y")}])
    assert "field 'rejected': expected exactly one assistant message, got 2" in msg


def test_message_shape(tmp_path):
    row = {"messages": [{"role": "user"}, {"role": "assistant", "content": "x", "name": "b"}]}
    msg = error_of(tmp_path, "sft", [row])
    assert "field 'messages[0].content': missing" in msg
    assert "field 'messages[1].name': unexpected field" in msg


def test_empty_or_whitespace_text(tmp_path):
    msg = error_of(tmp_path, "preference", [GOOD_PREF, {**GOOD_PREF, "prompt": u("   ")}])
    assert "line 2, field 'prompt[0].content': empty or whitespace-only text" in msg


def test_chosen_equal_to_rejected(tmp_path):
    msg = error_of(tmp_path, "preference", [{**GOOD_PREF, "rejected": GOOD_PREF["chosen"]}])
    assert "line 1, field 'rejected': identical to chosen" in msg


@pytest.mark.parametrize("label", [1, "true", None])
def test_kto_label_must_be_a_bool(tmp_path, label):
    rows_ = [{"prompt": u("q"), "completion": a("x"), "label": True},
             {"prompt": u("q2"), "completion": a("y"), "label": label}]
    msg = error_of(tmp_path, "kto", rows_)
    assert f"line 2, field 'label': expected true or false (JSON boolean), got {label!r}" in msg


def test_kto_set_with_one_label(tmp_path):
    rows_ = [{"prompt": u(f"q{i}"), "completion": a("x"), "label": True} for i in range(3)]
    assert "bad.jsonl, field 'label': all 3 rows are true (desirable); KTO needs both labels" in error_of(
        tmp_path, "kto", rows_)


def test_kto_limit_that_keeps_one_label_is_refused():
    with pytest.raises(DataValidationError, match="have one label only"):
        load_lab_dataset("kto", limit=1)


def test_all_errors_are_listed_with_their_lines(tmp_path):
    lines = [GOOD_PREF, {**GOOD_PREF, "chosen": a(" ")}, "", {"prompt": u("q")}]
    msg = error_of(tmp_path, "preference", lines)
    assert msg.startswith("3 problem(s) in the data:")
    assert "line 2, field 'chosen[0].content'" in msg
    assert "line 4, field 'chosen': missing" in msg and "line 4, field 'rejected': missing" in msg


def test_overlap_between_train_and_heldout_names_both_lines(tmp_path):
    train = write(tmp_path, "train.jsonl", [GOOD_PREF, {**GOOD_PREF, "prompt": u("Shared  Prompt")}])
    held = write(tmp_path, "held.jsonl", [{**GOOD_PREF, "prompt": u("other")},
                                          {**GOOD_PREF, "prompt": u("shared prompt")}])
    with pytest.raises(DataValidationError) as info:
        check_no_overlap(train, held)
    assert "held.jsonl, line 2, field 'prompt': also in" in str(info.value)
    assert "train.jsonl line 2" in str(info.value)


# ----------------------------------------------------------------------------------- describe_dataset, convert
def pref_set(chosen_words: int, rejected_words: int, n: int = 4) -> list[dict]:
    return [{"prompt": u(f"question {i}"), "chosen": a(" ".join(["good"] * chosen_words)),
             "rejected": a(" ".join(["bad"] * rejected_words))} for i in range(n)]


def test_describe_warns_on_a_length_confounded_preference_set(capsys):
    info = describe_dataset(pref_set(50, 5))
    assert info["length_ratio"] == 10.0
    assert "length bias" in info["warnings"][0]
    assert "WARNING: chosen/rejected mean length ratio 10.00" in capsys.readouterr().out


def test_describe_is_quiet_on_a_balanced_preference_set():
    info = describe_dataset(pref_set(20, 22), verbose=False)
    assert info["warnings"] == [] and 0.9 < info["length_ratio"] < 1.0


def test_describe_reports_kto_label_balance(capsys):
    good = sum(row["label"] for row in rows("kto", "train")[:20])  # counted from the file, not copied
    info = describe_dataset(load_lab_dataset("kto", limit=20))
    assert (info["desirable"], info["undesirable"]) == (good, 20 - good)
    assert f"{good} desirable / {20 - good} undesirable" in capsys.readouterr().out


def test_describe_counts_tokens_with_a_tokenizer(tokenizer):
    info = describe_dataset(load_lab_dataset("sft", limit=16), tokenizer=tokenizer, max_length=256, verbose=False)
    assert info["unit"] == "tokens" and info["longer_than_max_length"] == 0
    assert info["sequence_length"]["max"] > info["answer_length"]["max"]


def test_preference_to_kto_gives_one_desirable_and_one_undesirable_row_per_pair(tmp_path):
    pairs = load_lab_dataset("preference", limit=3)
    kto = preference_to_kto(pairs)
    assert len(kto) == 6 and kto["label"] == [True, False] * 3
    assert kto[0]["completion"] == pairs[0]["chosen"] and kto[1]["completion"] == pairs[0]["rejected"]
    assert kto[1]["prompt"] == pairs[0]["prompt"]
    path = write(tmp_path, "kto.jsonl", kto.to_list())
    assert len(read_rows(path, "kto")) == 6

