"""labhelpers.results: the per-profile results table (save, replace by method, load, plot)."""

from __future__ import annotations

import json

import pytest

from labhelpers.profiles import profile
from labhelpers.results import load_results, plot_results, result_row, results_path, save_result


@pytest.fixture
def lab(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("LABS_PROFILE", "smoke")
    monkeypatch.delenv("LABS_MODEL", raising=False)
    return profile(verbose=False)


def test_save_and_load_round_trip_replaces_by_method(lab, tmp_path):
    path = save_result(
        {"method": "dpo", "accuracy_before": 0.5, "accuracy_after": 0.75, "peak_memory_gb": 3.1}
    )
    assert path == tmp_path / "smoke" / "results.jsonl" == results_path()
    save_result(
        {"method": "simpo", "accuracy_before": 0.5, "accuracy_after": 0.9, "wall_time_s": 12.5}, lab=lab
    )
    save_result({"method": "dpo", "accuracy_before": 0.5, "accuracy_after": 0.8, "peak_memory_gb": 3.0})
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["method"] for r in lines] == ["simpo", "dpo"]  # dpo replaced, not duplicated
    df = load_results()
    assert list(df.columns[:3]) == ["method", "accuracy_before", "accuracy_after"]
    dpo = df.set_index("method").loc["dpo"]
    assert dpo["accuracy_after"] == 0.8 and dpo["profile"] == "smoke" and dpo["model"] == lab.model
    assert dpo["timestamp"].endswith("+00:00")
    assert load_results(profile="full").empty  # another profile has its own file
    assert not [
        p for p in path.parent.iterdir() if p.name.endswith(".tmp")
    ]  # atomic write left nothing behind


def test_save_result_with_explicit_path_and_numpy_scalars(lab, tmp_path):
    import numpy as np

    target = tmp_path / "elsewhere" / "r.jsonl"
    save_result({"method": "kto", "tokens_per_s": np.float32(123.5), "steps": np.int64(30)}, path=target)
    row = load_results(path=target).iloc[0]
    assert row["tokens_per_s"] == 123.5 and row["steps"] == 30


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ({"accuracy_after": 0.5}, ValueError, "field 'method' must be a non-empty string"),
        ({"method": "dpo", "accuracy_after": float("nan")}, ValueError, "field 'accuracy_after' is nan"),
        ({"method": "dpo", "when": object()}, TypeError, "field 'when' .* is not JSON-serialisable"),
    ],
)
def test_save_result_rejects_bad_rows_by_field(lab, row, error, message):
    with pytest.raises(error, match=message):
        save_result(row)


def test_load_results_names_a_corrupt_line(lab):
    path = save_result({"method": "orpo", "accuracy_after": 0.6})
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"results.jsonl, line 2: not valid JSON"):
        load_results()


def test_plot_results_draws_accuracy_and_memory(lab):
    save_result({"method": "dpo", "accuracy_before": 0.5, "accuracy_after": 0.8, "peak_memory_gb": 3.0})
    save_result({"method": "orpo", "accuracy_before": 0.5, "accuracy_after": 0.7})  # memory not measured
    fig = plot_results(load_results())
    accuracy, memory = fig.axes
    assert len(accuracy.patches) == 4 and len(memory.patches) == 2
    with pytest.raises(ValueError, match="no results yet"):
        plot_results(load_results(profile="full"))


def preference_row(method: str, measure: str, passes: int, seconds: float, **changes: float) -> dict:
    row = {"method": method, "measure": measure, "eval_pairs": 64, "accuracy_before": 0.4, "accuracy_after": 0.5,
           "margin_before": -1.0, "margin_after": 0.5, "pairs_improved": 0.7, "wall_time_s": seconds, "steps": 8,
           "peak_memory_gb": 1.5, "reference_passes": passes, "start": "the instruct model"}  # fmt: skip
    for kind in ("broken_format", "wrong_lab", "wrong_fact"):
        row[f"accuracy_{kind}_before"] = 0.5
        row[f"accuracy_{kind}_after"] = 0.5 + changes.get(kind, 0.0)
    return row


def test_preference_rows_keep_the_methods_scored_like_this_run_and_say_what_to_rerun(lab):
    from labhelpers.results import preference_rows

    save_result(preference_row("kto", "summed", 16, 40.0))
    save_result(preference_row("dpo", "summed", 8, 40.0))
    save_result({**preference_row("orpo", "per_token", 0, 20.0), "eval_pairs": 16})  # an older, smaller run
    save_result({"method": "lora_sft", "heldout_loss_after": 1.0})  # not a preference lab
    rows, notes = preference_rows(load_results(), eval_pairs=64, model=lab.model, start="the instruct model")
    assert list(rows["method"]) == ["dpo", "kto"]  # lab order, not file order
    assert notes == [
        "simpo: no row yet on this profile (run labs/07_simpo.ipynb)",
        "orpo: left out, scored another way: eval_pairs 16 (this run: 64); rerun labs/08_orpo.ipynb",
    ]
    rows, notes = preference_rows(load_results(), eval_pairs=64, start="lab 03's SFT adapter")
    assert rows.empty and "start 'the instruct model' (this run: \"lab 03's SFT adapter\")" in notes[0]
    empty, notes = preference_rows(load_results(profile="full"), eval_pairs=64)
    assert empty.empty and len(notes) == 4


def test_preference_table_and_findings_read_the_rows(lab):
    from labhelpers.results import preference_findings, preference_rows, preference_table

    save_result(preference_row("dpo", "summed", 8, 40.0, broken_format=0.25, wrong_fact=-0.125))
    save_result(preference_row("simpo", "per_token", 0, 20.0, broken_format=0.125, wrong_lab=0.25))
    rows, _ = preference_rows(load_results(), eval_pairs=64)
    table = preference_table(rows)
    assert (
        table.loc["dpo", "broken format"] == "0.50 -> 0.75"
        and table.loc["simpo", "wrong lab"] == "0.50 -> 0.75"
    )
    assert table.loc["dpo", "s per step"] == "5.00" and table.loc["simpo", "reference passes"] == "0"
    assert table.loc["simpo", "pairs improved"] == "70%" and table.loc["dpo", "margin"] == "-1.000 -> +0.500"
    findings = preference_findings(rows)
    assert findings[0].startswith(
        "DPO (summed margin): 70% of pairs gained margin; accuracy on broken format rose"
    )
    assert "wrong fact or unsafe advice fell (0.50 -> 0.38)" in findings[0]
    assert (
        "SIMPO (per_token margin)" in findings[1]
        and "wrong fact or unsafe advice did not move" in findings[1]
    )
    assert findings[2].endswith("With the reference, a step took 2.0x as long on this machine.")
    assert (
        findings[3]
        == "Accuracy change across methods: broken format +0.12 to +0.25, wrong fact or unsafe advice -0.12 to +0.00."
    )
    alone, _ = preference_rows(load_results().query("method == 'dpo'"), eval_pairs=64)
    assert "Only methods with a reference pass have timed rows here" in preference_findings(alone)[1]


def test_plot_results_adds_the_preference_panels_when_the_rows_have_them(lab):
    save_result(preference_row("dpo", "summed", 8, 40.0, broken_format=0.25))
    save_result(preference_row("orpo", "per_token", 0, 20.0))
    fig = plot_results(load_results())
    titles = [axis.get_title() for axis in fig.axes]
    assert titles == ["held-out accuracy", "accuracy change, by kind of rejected answer",
                      "share of pairs whose margin grew", "training time (s); purple: with reference passes",
                      "peak memory (GB)"]  # fmt: skip
    assert len(fig.axes[1].patches) == 3 * 2  # three kinds x two methods


def test_result_row_adds_the_training_summary_and_leaves_out_what_was_not_measured():
    from labhelpers.training import TrainSummary

    summary = TrainSummary(wall_time_s=12.5, steps=8, start_step=0, final_loss=None, tokens_per_s=float("nan"),
                           trained_tokens=0, nonpad_fraction=1.0, peak_memory_bytes=1_250_000_000, memory_delta_bytes=0,
                           resumed_from=None, stopped_by_nan=False)
    row = result_row({"method": "dpo", "accuracy_after": 0.75, "margin_after": None}, summary, note="x")
    assert row == {"method": "dpo", "accuracy_after": 0.75, "steps": 8, "wall_time_s": 12.5, "peak_memory_gb": 1.25,
                   "note": "x"}
