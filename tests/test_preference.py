"""labhelpers.preference: the forward-pass counter the preference labs report as reference passes."""

from __future__ import annotations

import copy

import torch


def test_count_passes_tells_policy_passes_from_adapter_off_reference_passes(tiny_llama):
    from peft import get_peft_model

    from labhelpers.preference import count_passes
    from labhelpers.training import lora_config

    model = get_peft_model(copy.deepcopy(tiny_llama), lora_config(None))
    ids = torch.tensor([[1, 2, 3]])
    with count_passes(model) as forwards:
        model(input_ids=ids)  # policy, trained through
        with torch.no_grad():
            model(input_ids=ids)  # policy, not trained through (KTO's KL rows)
            with model.disable_adapter():
                model(input_ids=ids)  # the reference: same weights, adapter off
    model(input_ids=ids)  # after the block: not counted
    assert forwards == {"with_grad": 1, "no_grad": 2, "adapter_off": 1}
    with count_passes(tiny_llama) as plain, torch.no_grad():  # no adapter at all: nothing is "off"
        tiny_llama(input_ids=ids)
    assert plain == {"with_grad": 0, "no_grad": 1, "adapter_off": 0}
