"""labhelpers.results: the per-profile results table (save, replace by method, load, plot)."""

from __future__ import annotations

import json

import pytest

from labhelpers.profiles import profile
from labhelpers.results import load_results, plot_results, results_path, save_result


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
