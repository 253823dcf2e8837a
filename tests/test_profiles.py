"""Profiles: LABS_PROFILE / LABS_MODEL are validated in one place, with errors that say what to do."""

from __future__ import annotations

import dataclasses

import pytest

from labhelpers.profiles import LLAMA_8B, LLAMA_70B, ProfileError, outputs_root, profile, resolve_model


def test_smoke_is_the_default_and_uses_the_embedded_model_offline(monkeypatch):
    monkeypatch.delenv("LABS_PROFILE", raising=False)
    monkeypatch.delenv("LABS_MODEL", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    lab = profile(verbose=False)
    assert lab.name == "smoke" and lab.is_smoke
    assert lab.model == lab.big_model == "embedded"
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_full_profile_uses_llama_8b_and_70b(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "full")
    monkeypatch.delenv("LABS_MODEL", raising=False)
    lab = profile(verbose=False)
    assert (lab.model, lab.big_model) == (LLAMA_8B, LLAMA_70B)
    # the full profile states epochs (1-3); labhelpers.schedules computes the steps from the data
    assert lab.sft_steps is None and lab.pref_steps is None
    assert 1 <= lab.sft_epochs <= 3 and 1 <= lab.pref_epochs <= 3
    assert "2 epochs" in lab.summary() and "steps computed from the data" in lab.summary()
    # ORPO keeps the paper's lambda and the shared rate here; the smoke profile's own settings are printed too
    assert (lab.orpo_lambda, lab.orpo_learning_rate) == (0.1, None) and "ORPO 0.0005, lambda 0.1" in lab.summary()
    monkeypatch.setenv("LABS_PROFILE", "smoke")
    assert "ORPO 0.001, lambda 10" in profile(verbose=False).summary()


def test_unknown_profile_names_the_variable(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "quick")
    with pytest.raises(ProfileError, match=r"LABS_PROFILE='quick'.*LABS_PROFILE=smoke.*LABS_PROFILE=full"):
        profile(verbose=False)


def test_missing_model_path_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(ProfileError, match=r"LABS_MODEL=.*nowhere.*no such folder"):
        profile(verbose=False)


def test_folder_without_config_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_MODEL", str(tmp_path))
    with pytest.raises(ProfileError, match=r"LABS_MODEL=.*config.json"):
        profile(verbose=False)


def test_hub_id_offline_and_not_cached_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABS_MODEL", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    with pytest.raises(ProfileError, match=r"LABS_MODEL='TinyLlama/.*HF_HUB_OFFLINE=1.*not in the local cache"):
        profile(verbose=False)


def test_local_model_folder_override(monkeypatch, embedded_dir):
    monkeypatch.setenv("LABS_MODEL", str(embedded_dir))
    lab = profile(verbose=False)
    assert lab.model_overridden and lab.resolve() == str(embedded_dir.resolve())


def test_summary_prints_profile_model_and_device(monkeypatch, capsys):
    monkeypatch.delenv("LABS_MODEL", raising=False)
    profile(verbose=True)
    out = capsys.readouterr().out
    assert "profile : smoke" in out and "model   : embedded" in out and "device  : cpu" in out


def test_outputs_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_OUTPUT_DIR", str(tmp_path))
    assert outputs_root() == tmp_path
    lab = profile(verbose=False)
    assert lab.lab_dir("03_lora_sft") == tmp_path / "smoke" / "03_lora_sft"
    assert (tmp_path / "smoke" / "03_lora_sft").is_dir()


def test_resolve_embedded_returns_the_materialised_folder(embedded_dir):
    assert resolve_model("embedded") == str(embedded_dir)


def test_hub_id_without_a_reachable_hub_names_the_variable_and_the_offline_cache(monkeypatch):
    """No HF_HUB_OFFLINE, nothing answering at the hub address: LABS_MODEL and the offline cache are named."""

    from huggingface_hub import constants

    from labhelpers.profiles import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("LABS_MODEL", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    hub_reachable.cache_clear()
    try:
        with pytest.raises(ProfileError) as err:
            profile(verbose=False)
    finally:
        hub_reachable.cache_clear()
    text = str(err.value)
    assert "LABS_MODEL='TinyLlama/TinyLlama-1.1B-Chat-v1.0'" in text and "cannot be reached" in text
    assert "127.0.0.1:9" in text and "offline cache" in text and constants.HF_HUB_CACHE in text
    assert "hf download TinyLlama/TinyLlama-1.1B-Chat-v1.0" in text and "unset LABS_MODEL" in text


def test_hub_id_cached_but_unreachable_goes_offline(monkeypatch, capsys):
    from huggingface_hub import constants

    import labhelpers.profiles as P

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(P, "hub_reachable", lambda: (False, "test: no network"))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: "/cache/config.json")
    assert resolve_model("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert "unreachable (test: no network); using the copy in the local cache" in capsys.readouterr().out


def test_grpo_presets_sample_groups_of_completions_per_step(lab, monkeypatch):
    from labhelpers.training import grpo_config

    g = lab.grpo
    assert g.completions_per_step == g.prompts_per_step * g.generations
    assert g.completions_per_generation == g.completions_per_step * g.steps_per_generation
    args = grpo_config(lab, "/tmp/unused-grpo")
    assert (args.num_generations, args.per_device_train_batch_size, args.max_completion_length) == (
        g.generations, g.completions_per_step, g.completion_tokens)
    assert (args.max_steps, args.steps_per_generation, args.beta, args.temperature) == (
        g.steps, g.steps_per_generation, 0.0, 1.0)
    assert args.disable_dropout and not args.activation_checkpointing and args.top_k == 0
    assert grpo_config(lab, "/tmp/unused-grpo", max_steps=2).max_steps == 2


def test_a_profile_without_grpo_settings_says_so():
    lab = dataclasses.replace(profile(verbose=False), grpo=None)
    with pytest.raises(ValueError, match="has no GRPO settings"):
        lab.grpo_settings()
