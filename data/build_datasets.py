"""Build the labs' datasets from the knowledge base below: deterministic, standard library only.

    python data/build_datasets.py           # (re)write the six JSONL files next to this script
    python data/build_datasets.py --check   # exit 1 if the files on disk differ from what would be written
    python data/build_datasets.py --stats   # print the counts and length statistics quoted in data/README.md

The task: every answer has the shape ``Answer: <one or two sentences>\\nLab: 3.1.<N>``, where N is the
lab covering the topic (see labhelpers/task.py). Each fact below has a correct answer, a substantively
wrong answer of similar length, sometimes an unsafe answer, and four question phrasings that are
combined with conversational framings to give many distinct prompts.

Held-out rows come only from facts marked ``heldout=True`` (never trained on), so the held-out metric
measures whether the format and the topic -> lab mapping generalise, not whether rows were memorised.
Everything here is the project's own text (Apache-2.0).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SEED = 3110
OUT_DIR = Path(__file__).resolve().parent
SIZES = {
    "sft": {"train": 1200, "heldout": 120},
    "preference": {"train": 600, "heldout": 120},
    "kto": {"train": 1000, "heldout": 100},
}
KTO_DESIRABLE_SHARE = 0.55
# Preference / KTO rejected answers: kind -> weight, for facts with and without an unsafe variant.
REJECT_WEIGHTS = {"wrong_fact": 0.50, "wrong_lab": 0.25, "broken_format": 0.25}
REJECT_WEIGHTS_UNSAFE = {"unsafe": 0.60, "wrong_fact": 0.20, "wrong_lab": 0.10, "broken_format": 0.10}
MAX_ANSWER_WORDS = 14  # short answers are learnt within the smoke run and fit its 48 new tokens

TRAIN_FRAMINGS = (
    "{q}",
    "Quick question: {q}",
    "{q} Please answer briefly.",
    "Hi! {q}",
    "On my DGX Spark: {q}",
    "{q} (working through the fine-tuning labs)",
    "I'm stuck on the labs. {q}",
    "Can you help? {q}",
    "{q} Thanks!",
    "Question about the Spark labs: {q}",
)
HELDOUT_FRAMINGS = TRAIN_FRAMINGS + ("Hello there. {q}", "{q} A short answer is fine.")


@dataclass(frozen=True)
class Fact:
    """One piece of knowledge: the lab that teaches it, how learners ask, right / wrong / unsafe answers."""

    key: str
    lab: int
    questions: tuple[str, ...]
    answer: str
    wrong: str
    unsafe: str | None = None
    heldout: bool = False


def F(key, lab, questions, answer, wrong, unsafe=None, heldout=False) -> Fact:  # noqa: N802 - table helper
    return Fact(key, lab, tuple(questions), answer, wrong, unsafe, heldout)


FACTS: list[Fact] = [
    # ---------------------------------------------------------------- 00 environment check
    F("container-torch", 0, [
        "Why shouldn't I pip install torch on the Spark?",
        "Can I upgrade PyTorch with pip inside the NGC container?",
        "Is it fine to run pip install torch in the lab container?",
        "Why do the labs keep the container's own PyTorch build?",
    ],
        "Keep the container's PyTorch; pip can replace it without GB10 support.",
        "Run pip install torch first; the container's PyTorch is outdated.",
        unsafe="Start each notebook with !pip install --upgrade torch.",
    ),
    F("drop-caches", 0, [
        "How do I clear the buffer cache before a big run?",
        "Where should the drop_caches command be run?",
        "Can I put the drop caches command in a notebook cell?",
        "What is the right way to free the page cache on the Spark?",
    ],
        "Run sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches' in a terminal only.",
        "Run sync once in a notebook; the page cache never holds models.",
        unsafe="Put !sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches' in a notebook cell.",
    ),
    F("gpu-visible", 0, [
        "How do I check that the GPU is visible?",
        "How can I confirm PyTorch sees the GB10 GPU?",
        "What does the environment check run to find the GPU?",
        "How do I know CUDA works inside the container?",
    ],
        "Run nvidia-smi, then torch.cuda.is_available() in Python.",
        "Run lscpu, then torch.backends.mps.is_available() in Python.",
    ),
    F("unified-memory", 0, [
        "How much memory does the DGX Spark have for training?",
        "Is the Spark's GPU memory separate from system RAM?",
        "What does unified memory mean on the Spark?",
        "How big is the Spark's memory pool?",
    ],
        "128 GB of unified memory, shared by CPU and GPU.",
        "48 GB of GPU memory, separate from system RAM.",
    ),
    F("aarch64", 0, [
        "What CPU architecture does the Spark use?",
        "Why won't some x86 wheels install on the Spark?",
        "Is the DGX Spark an ARM or an x86 machine?",
        "Do I need special Python wheels on the Spark?",
    ],
        "ARM64 (aarch64), so use the NGC container's ARM64 builds.",
        "x86_64, so any x86 wheel installs without the container.",
        unsafe="x86_64; force-reinstall an x86 torch wheel over the container's build.",
    ),
    F("disk-space", 0, [
        "How much free disk space do the labs need?",
        "How large are the Llama 3.1 downloads?",
        "How much disk does the 70B model take?",
        "Will my disk fill up during the module?",
    ],
        "About 200 GB: 16 GB for 8B and 140 GB for 70B.",
        "About 20 GB: 2 GB for 8B and 14 GB for 70B.",
    ),
    F("gated-llama", 0, [
        "How do I get access to the Llama 3.1 models?",
        "Why does downloading Llama 3.1 fail with a 403 error?",
        "What must I do before downloading a gated Llama model?",
        "How do I unlock meta-llama models on Hugging Face?",
    ],
        "Accept the licence on the meta-llama page, then run hf auth login.",
        "No approval is needed; a 403 means a corrupt download.",
        unsafe="Commit your Hugging Face token inside a notebook cell.",
    ),
    F("hf-token", 0, [
        "Where should I put my Hugging Face token?",
        "Is it okay to hard-code my HF token in a notebook?",
        "How do I log in to the Hugging Face hub safely?",
        "How should the labs authenticate to the hub?",
    ],
        "Run hf auth login in a terminal; never put tokens in notebooks.",
        "Tokens are public, so paste yours into any notebook cell.",
        unsafe="Hard-code HF_TOKEN in each notebook and commit it.",
    ),
    F("profiles", 0, [
        "What is the difference between the smoke and full profiles?",
        "What does LABS_PROFILE=smoke do?",
        "How do I run the labs quickly on a laptop?",
        "When should I use LABS_PROFILE=full?",
    ],
        "smoke runs a tiny embedded model in minutes; full trains Llama 3.1.",
        "full runs a tiny embedded model in minutes; smoke trains Llama 3.1.",
    ),
    F("multi-gpu", 0, [
        "Do I need FSDP or DeepSpeed on the Spark?",
        "How many GPUs does the DGX Spark have?",
        "Should I shard the model across GPUs for these labs?",
        "Is multi-GPU training part of this module?",
    ],
        "One GB10 GPU with 128 GB, so no FSDP or DeepSpeed is needed.",
        "Eight 16 GB GPUs, so every lab needs FSDP or DeepSpeed.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 01 LoRA from scratch
    F("lora-what", 1, [
        "What does LoRA actually do?",
        "How does low-rank adaptation work?",
        "What is trained when I use LoRA?",
        "Explain LoRA in one sentence.",
    ],
        "LoRA freezes W and trains a low-rank update B times A.",
        "LoRA unfreezes W and trains a full-rank update to it.",
    ),
    F("lora-rank", 1, [
        "What rank r should I use for LoRA?",
        "Is r=16 a good LoRA rank?",
        "When would I pick r=64 instead of r=8?",
        "How do I choose the LoRA rank?",
    ],
        "r=8 quick tests, r=16 default, r=32 complex tasks, r=64 maximum quality.",
        "r=64 quick tests, r=32 default, r=16 complex tasks, r=8 maximum quality.",
    ),
    F("lora-init", 1, [
        "Why is LoRA's B matrix initialised to zero?",
        "How are the LoRA matrices A and B initialised?",
        "Why does a fresh LoRA model behave like the base model?",
        "What is the output of a LoRA layer before training?",
    ],
        "B starts at zero, so training starts from the base model.",
        "A and B start random, so training starts far from the base.",
    ),
    F("lora-alpha", 1, [
        "What does lora_alpha do?",
        "How is the LoRA update scaled?",
        "What value should lora_alpha have?",
        "How do alpha and r interact in LoRA?",
    ],
        "The update is scaled by lora_alpha divided by r.",
        "The update is scaled by r divided by lora_alpha.",
    ),
    F("lora-params", 1, [
        "How many parameters does a LoRA adapter train?",
        "How do I count LoRA's trainable parameters?",
        "Why does LoRA train so few parameters?",
        "What is the parameter count of a rank-r adapter?",
    ],
        "r times (d plus k) parameters instead of d times k.",
        "r times d times k parameters, more than the weight itself.",
    ),
    F("lora-4096", 1, [
        "How many parameters does r=16 LoRA add to a 4096 by 4096 layer?",
        "For a 4096x4096 projection, how big is a rank-16 adapter?",
        "What fraction of a 4096-wide layer does rank-16 LoRA train?",
        "How small is a rank 16 adapter on a 4096 square matrix?",
    ],
        "About 131 thousand parameters instead of 16.8 million.",
        "About 16.8 million parameters instead of 131 thousand.",
        heldout=True,
    ),
    F("lora-merge", 1, [
        "Can LoRA weights be merged into the base model?",
        "Does LoRA slow down inference?",
        "What happens to the adapter after training?",
        "Is there extra latency from a LoRA adapter at inference?",
    ],
        "Merged into W, the adapter adds no inference latency.",
        "Adapters can never be merged, so inference is always slower.",
    ),
    F("lora-targets", 1, [
        "Which layers should LoRA target?",
        "Should I adapt only q_proj and v_proj?",
        "What are good target_modules for LoRA?",
        "Is targeting all linear layers better for LoRA?",
    ],
        "All linear layers usually beat only q_proj and v_proj.",
        "Only the embedding layer usually beats all linear layers.",
    ),
    F("lora-vs-full", 1, [
        "Should I use full fine-tuning instead of LoRA?",
        "Is LoRA much worse than full fine-tuning?",
        "Why not update all weights instead of using LoRA?",
        "When is LoRA a better choice than full fine-tuning?",
    ],
        "LoRA: near full quality with far fewer trainable parameters.",
        "Full fine-tuning: LoRA trains more parameters and uses more memory.",
    ),
    F("lora-adapters", 1, [
        "Can one base model serve several LoRA tasks?",
        "How do I keep many fine-tuned variants cheaply?",
        "Why are LoRA adapters easy to swap?",
        "Do I need a full model copy for each LoRA task?",
    ],
        "One base model serves many tasks by swapping small adapters.",
        "Each task needs its own full copy of the base model.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 02 dataset preparation
    F("chat-template", 2, [
        "How should I format conversations for training?",
        "Can I type the role tokens into the training text myself?",
        "Why use apply_chat_template for training data?",
        "What turns messages into the model's prompt format?",
    ],
        "Use the tokenizer's chat template, never hand-typed role tokens.",
        "Type role tokens by hand; chat templates are for inference only.",
    ),
    F("sft-format", 2, [
        "What does one SFT training row look like?",
        "What is the conversational format for SFT data?",
        "How is a chat example stored for SFTTrainer?",
        "Which fields does an SFT row need?",
    ],
        "A messages list: a user turn, then an assistant turn.",
        "A single text field holding only the answer, no question.",
    ),
    F("pref-format", 2, [
        "What does a preference pair contain?",
        "What fields does a DPO dataset row need?",
        "How is preference data structured?",
        "What is a chosen and rejected pair?",
    ],
        "A prompt with a chosen and a rejected answer.",
        "A prompt with one answer and a 1-10 score.",
    ),
    F("length-bias", 2, [
        "Should chosen answers be longer than rejected ones?",
        "What is length bias in preference data?",
        "How long should rejected answers be?",
        "Why check the chosen to rejected length ratio?",
    ],
        "Keep them similar, or the model learns length, not quality.",
        "Make chosen ten times longer; length signals a good answer.",
    ),
    F("heldout-split", 2, [
        "Why do I need a held-out set?",
        "Can I evaluate on my training prompts?",
        "When should I split off evaluation data?",
        "What makes a held-out set trustworthy?",
    ],
        "Hold out prompts never trained on, to measure generalisation.",
        "Evaluate on training prompts; a held-out set wastes data.",
    ),
    F("dedupe", 2, [
        "Should I remove duplicate prompts from my data?",
        "Why do duplicates between train and held-out matter?",
        "When should I deduplicate a dataset?",
        "What happens if held-out prompts also appear in train?",
    ],
        "Remove duplicates before splitting; shared prompts inflate scores.",
        "Keep duplicates across splits; repeats make scores more reliable.",
        heldout=True,
    ),
    F("quality", 2, [
        "Is more data always better for fine-tuning?",
        "Does data quality matter more than quantity?",
        "How many examples do I need for LoRA fine-tuning?",
        "Should I add lots of noisy examples to my dataset?",
    ],
        "A few thousand clean examples beat a huge noisy set.",
        "A million noisy examples always beat a few thousand clean ones.",
    ),
    F("truncation", 2, [
        "Why check token lengths against max_length?",
        "What goes wrong when rows are truncated?",
        "How should I pick max_length for my data?",
        "Can truncation produce empty training targets?",
    ],
        "Rows cut before the answer by max_length teach nothing.",
        "The trainer fits every row to max_length without losing anything.",
    ),
    F("completion-only", 2, [
        "Should the loss include the user's prompt?",
        "What is completion-only loss?",
        "Why train only on the assistant's tokens?",
        "Which tokens should carry the SFT loss?",
    ],
        "Loss only on assistant tokens, not on the prompt.",
        "Loss only on user tokens, not on the answer.",
    ),
    F("kto-format", 2, [
        "What does a KTO dataset row look like?",
        "Which fields does KTO data need?",
        "How is thumbs up or down feedback stored for training?",
        "What is the label column in KTO data?",
    ],
        "A prompt, one completion and a true or false label.",
        "A prompt, two completions and a 1-5 score for each.",
    ),
    F("validation", 2, [
        "Should I validate my dataset before training?",
        "What data errors should stop a training run?",
        "How do I catch broken rows early?",
        "What does good dataset validation report?",
    ],
        "Missing fields, bad roles and empty text must fail before training.",
        "None: the trainer silently drops broken rows, so skip checks.",
    ),
    # ---------------------------------------------------------------- 03 LoRA SFT on Llama 3.1 8B
    F("8b-fits", 3, [
        "Does plain LoRA on Llama 3.1 8B fit on the Spark?",
        "Do I need QLoRA for the 8B model?",
        "How much memory do the 8B weights take in bf16?",
        "Can I fine-tune Llama 3.1 8B without quantization?",
    ],
        "8B weights take about 16 GB in bf16, so plain LoRA fits.",
        "8B weights take about 160 GB in bf16, so QLoRA is required.",
    ),
    F("sft-lr", 3, [
        "What learning rate should LoRA SFT use?",
        "Is 2e-4 a sensible learning rate for LoRA?",
        "My LoRA loss spikes. Should I change the learning rate?",
        "Which learning rate do I start SFT with?",
    ],
        "Around 2e-4 with a short warmup; lower it if loss spikes.",
        "Around 2e-1 with no warmup; raise it if loss spikes.",
    ),
    F("trl-api", 3, [
        "Why does SFTTrainer reject the tokenizer argument?",
        "Should I pass max_seq_length to SFTConfig?",
        "How do I give the tokenizer to SFTTrainer in current TRL?",
        "What replaced max_seq_length in TRL?",
    ],
        "Use processing_class and max_length; tokenizer= and max_seq_length are old.",
        "Use tokenizer= and max_seq_length; processing_class and max_length are gone.",
    ),
    F("nan-loss", 3, [
        "My training loss is NaN. What happened?",
        "Why does the loss become nan after a few steps?",
        "How do I fix a NaN loss in SFT?",
        "What causes NaN losses when fine-tuning?",
    ],
        "Too high a learning rate, empty targets or fp16 overflow; use bf16.",
        "The LoRA rank is too low; raise r to 256 and change nothing else.",
    ),
    F("repetitive", 3, [
        "Why does my fine-tuned model repeat itself?",
        "My model gives weird, repetitive outputs. Why?",
        "How do I fix a model that loops after fine-tuning?",
        "What makes a fine-tuned model ramble?",
    ],
        "Overfitting or a chat template mismatch; train less, vary the data.",
        "The rank is too small; raise r to 512 and train much longer.",
    ),
    F("grad-ckpt", 3, [
        "What does gradient checkpointing trade off?",
        "Should I turn on gradient checkpointing?",
        "How does gradient checkpointing save memory?",
        "Why is training slower with gradient checkpointing?",
    ],
        "It recomputes activations, trading some speed for much less memory.",
        "It stores activations twice, trading memory for more speed.",
        heldout=True,
    ),
    F("bf16", 3, [
        "Should I train in bf16 or fp16 on the Spark?",
        "Why is bf16 preferred for fine-tuning?",
        "Is fp16 safe for training on the GB10?",
        "Which precision avoids overflow during training?",
    ],
        "bf16: it has fp32's exponent range, so no fp16 overflow.",
        "fp16: it has a wider exponent range than bf16.",
    ),
    F("measure", 3, [
        "How do I know fine-tuning actually helped?",
        "What should I measure before and after training?",
        "How do I prove the adapter improved the model?",
        "Is a lower training loss enough evidence?",
    ],
        "Compare held-out loss and the task metric before and after.",
        "A lower training loss alone proves the adapter helped.",
    ),
    F("save-adapter", 3, [
        "What does trainer.save_model write for a LoRA run?",
        "How big is a saved LoRA adapter?",
        "Does saving a LoRA model copy the whole 8B model?",
        "Which files make up a saved adapter?",
    ],
        "Only the small adapter files, megabytes, not the 8B model.",
        "A full 16 GB copy of the 8B model every time.",
        unsafe="The whole model as a pickle .bin via torch.save.",
        heldout=True,
    ),
    F("remote-code", 3, [
        "Should I set trust_remote_code=True when loading models?",
        "What does trust_remote_code do?",
        "Is trust_remote_code safe to leave on?",
        "When is trust_remote_code needed?",
    ],
        "Keep trust_remote_code=False unless you have read that repository's code.",
        "trust_remote_code never runs code, so always leave it on.",
        unsafe="Set trust_remote_code=True by default in every load call.",
    ),
    F("training-time", 3, [
        "How long does LoRA SFT take on the Spark?",
        "How do I estimate my training time?",
        "Why does my run take longer than expected?",
        "What decides how long fine-tuning takes?",
    ],
        "It depends on steps, batch and sequence length; the lab measures it.",
        "Always exactly ten minutes, whatever the steps or batch size.",
    ),
    F("no-llama-access", 3, [
        "My Llama access is still pending. Can I still do the SFT lab?",
        "Can I use a different model while waiting for Llama approval?",
        "How do I switch the labs to another model?",
        "Which setting chooses the model a lab trains?",
    ],
        "Set LABS_MODEL to an ungated model such as Mistral 7B Instruct.",
        "None: the labs hard-code Llama, so wait for approval.",
        unsafe="Download Llama from an unofficial mirror with trust_remote_code=True.",
    ),
    # ---------------------------------------------------------------- 04 NEFTune
    F("neftune-what", 4, [
        "What is NEFTune?",
        "How does NEFTune change training?",
        "What does NEFTune add to the model?",
        "Explain NEFTune briefly.",
    ],
        "NEFTune adds random noise to token embeddings during training.",
        "NEFTune adds random noise to the weights after training.",
    ),
    F("neftune-scale", 4, [
        "How is NEFTune's noise scaled?",
        "What is the NEFTune noise formula?",
        "Does NEFTune noise depend on sequence length?",
        "How big is the noise NEFTune adds?",
    ],
        "Uniform noise scaled by alpha divided by sqrt(L times d).",
        "Uniform noise scaled by alpha times L times d.",
    ),
    F("neftune-inference", 4, [
        "Is NEFTune noise added at inference time?",
        "Does NEFTune change generation after training?",
        "Do I need to keep NEFTune on when serving the model?",
        "Is NEFTune active when I generate text?",
    ],
        "No: NEFTune noise is applied only during training.",
        "Yes: NEFTune noise must stay on during inference.",
    ),
    F("neftune-enable", 4, [
        "How do I turn on NEFTune in TRL?",
        "Which config option enables NEFTune?",
        "Where do I set neftune_noise_alpha?",
        "How do I add NEFTune to my SFT run?",
    ],
        "Set neftune_noise_alpha in SFTConfig, for example 5.",
        "Set neftune_noise_alpha in GenerationConfig, for example 500.",
    ),
    F("neftune-why", 4, [
        "Why does NEFTune work? Adding noise sounds harmful.",
        "How can noise improve fine-tuning?",
        "What is the intuition behind NEFTune?",
        "Why would noisy embeddings help a model?",
    ],
        "The noise acts like data augmentation against memorising embeddings.",
        "The noise deletes rare tokens so the model has fewer choices.",
    ),
    F("neftune-alpha", 4, [
        "What neftune_noise_alpha values are typical?",
        "Which alpha should I start NEFTune with?",
        "Is a bigger NEFTune alpha better?",
        "What range of alpha does NEFTune use?",
    ],
        "Alpha 5, 10 or 15; start at 5 and compare held-out results.",
        "Alpha 500 to 1000; start at 1000 and never compare results.",
    ),
    F("neftune-cost", 4, [
        "Does NEFTune slow training or use more memory?",
        "What does NEFTune cost in compute?",
        "Is NEFTune expensive to turn on?",
        "How much overhead does NEFTune add?",
    ],
        "Almost none: one noise tensor per step, no extra memory.",
        "A lot: a second model copy each step doubles memory.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 05 QLoRA on 70B
    F("qlora-nf4", 5, [
        "What is NF4 in QLoRA?",
        "How does QLoRA store the base model?",
        "What is the difference between LoRA and QLoRA?",
        "Which weights are 4-bit in QLoRA?",
    ],
        "Frozen base weights in 4-bit NF4, with LoRA adapters on top.",
        "Adapters in 4-bit NF4, with frozen base weights in fp32.",
    ),
    F("double-quant", 5, [
        "What does double quantization do?",
        "Should I enable bnb_4bit_use_double_quant?",
        "How much does double quantization save?",
        "What is quantized twice in QLoRA?",
    ],
        "It quantizes the scaling constants too, saving about 3 GB on 70B.",
        "It stores every weight twice, adding about 70 GB on 70B.",
    ),
    F("compute-dtype", 5, [
        "What should bnb_4bit_compute_dtype be?",
        "Why set the 4-bit compute dtype to bfloat16?",
        "Do QLoRA matmuls run in 4-bit?",
        "What precision does QLoRA compute in?",
    ],
        "bfloat16: 4-bit weights are dequantized for each matmul.",
        "int4: matmuls run directly on 4-bit weights.",
    ),
    F("70b-fits", 5, [
        "Does a 70B model fit on the Spark with QLoRA?",
        "How much memory does 70B QLoRA need?",
        "Can I fine-tune Llama 3.1 70B on 128 GB?",
        "How big is a 70B model in 4-bit?",
    ],
        "In 4-bit the 70B weights need about 35-40 GB, so it fits.",
        "In 4-bit the 70B weights still need about 140 GB; it cannot fit.",
    ),
    F("70b-bf16", 5, [
        "Why can't I use plain LoRA on the 70B model?",
        "How much memory do 70B weights take in bf16?",
        "Does 70B fit in 128 GB without quantization?",
        "Why is QLoRA needed for Llama 3.1 70B?",
    ],
        "In bf16 the 70B weights take about 140 GB, over 128 GB.",
        "In bf16 the 70B weights take about 14 GB, well under 128 GB.",
    ),
    F("bnb-config", 5, [
        "How do I load a model in 4-bit for QLoRA?",
        "What BitsAndBytesConfig does QLoRA use?",
        "Which quantization settings does the 70B lab use?",
        "How do I configure bitsandbytes for QLoRA?",
    ],
        "load_in_4bit=True, nf4, double quantization and bfloat16 compute.",
        "load_in_8bit=True, fp4, no double quantization and float16 compute.",
    ),
    F("70b-oom", 5, [
        "I'm getting OOM on 70B. What's wrong?",
        "Why does loading the 70B model run out of memory?",
        "How do I avoid out-of-memory errors in the QLoRA lab?",
        "The 70B lab crashed with OOM. What should I check?",
    ],
        "Drop caches in a terminal first, load 4-bit, use batch size 1.",
        "Load in bf16 and raise the batch to 16; bigger batches save memory.",
        unsafe="Add !sudo sh -c 'echo 3 > /proc/sys/vm/drop_caches' to the training cell.",
    ),
    F("kbit-prep", 5, [
        "What does prepare_model_for_kbit_training do?",
        "Do I need prepare_model_for_kbit_training for QLoRA?",
        "What must happen before adding adapters to a 4-bit model?",
        "Why call prepare_model_for_kbit_training?",
    ],
        "Call prepare_model_for_kbit_training before adding adapters to a 4-bit model.",
        "Call prepare_model_for_kbit_training after training to restore fp32 weights.",
    ),
    F("qlora-quality", 5, [
        "Is QLoRA quality much worse than LoRA?",
        "What does QLoRA cost compared with 16-bit LoRA?",
        "Does 4-bit quantization ruin fine-tuning quality?",
        "How close is QLoRA to regular LoRA?",
    ],
        "Very close to 16-bit LoRA; it mainly costs some speed.",
        "Far worse than 16-bit LoRA, though four times faster.",
        heldout=True,
    ),
    F("paged-optim", 5, [
        "What is a paged optimizer?",
        "Should I use paged_adamw_8bit for QLoRA?",
        "How can I shrink optimizer memory in QLoRA?",
        "Why do QLoRA recipes use paged AdamW?",
    ],
        "Paged 8-bit AdamW shrinks optimizer state and absorbs memory spikes.",
        "Paged AdamW keeps optimizer state in 64-bit to avoid spikes.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 06 DPO
    F("dpo-what", 6, [
        "What is DPO?",
        "How does Direct Preference Optimization work?",
        "Does DPO need a reward model?",
        "What does DPO optimise?",
    ],
        "DPO trains on chosen and rejected pairs, with no reward model.",
        "DPO trains a reward model first, then runs PPO against it.",
    ),
    F("dpo-beta", 6, [
        "What does beta control in DPO?",
        "What is a typical DPO beta?",
        "Should I raise or lower DPO's beta?",
        "How does beta affect DPO training?",
    ],
        "beta limits drift from the reference; about 0.1 is typical.",
        "beta is DPO's learning rate; about 10 is typical.",
    ),
    F("dpo-ref", 6, [
        "Does DPO need a reference model?",
        "Do I load two models for DPO with LoRA?",
        "How does TRL handle the DPO reference model with PEFT?",
        "What is the reference model in DPO?",
    ],
        "A frozen reference; with LoRA, TRL disables the adapter instead of copying.",
        "There is none; DPO only compares the lengths of the answers.",
    ),
    F("dpo-metrics", 6, [
        "How do I tell if DPO is working?",
        "What metrics should I watch during DPO?",
        "What do rewards/accuracies mean in DPO?",
        "What is a good DPO preference accuracy?",
    ],
        "Held-out rewards/accuracies above 0.5 and growing rewards/margins.",
        "Only the training loss; accuracy below 0.5 means success.",
    ),
    F("dpo-lr", 6, [
        "What learning rate should DPO use?",
        "Can I use the SFT learning rate for DPO?",
        "Why is DPO's learning rate so small?",
        "Which learning rate suits LoRA DPO?",
    ],
        "Far lower than SFT: about 5e-6, up to 5e-5 with LoRA.",
        "Far higher than SFT: about 5e-2, up to 1.0 with LoRA.",
    ),
    F("dpo-from-sft", 6, [
        "Should DPO start from the base model or an SFT model?",
        "Why run SFT before DPO?",
        "Which checkpoint should DPO start from?",
        "Is SFT a good starting point for DPO?",
    ],
        "Start from an SFT model, so the pairs fit its distribution.",
        "Start from random weights; an SFT model has seen the answers.",
        heldout=True,
    ),
    F("dpo-trainer", 6, [
        "How do I set up DPOTrainer in TRL?",
        "Which columns does DPOTrainer need?",
        "How do I pass the tokenizer to DPOTrainer?",
        "What config class goes with DPOTrainer?",
    ],
        "DPOTrainer with DPOConfig; data needs prompt, chosen and rejected.",
        "DPOTrainer with TrainingArguments; data needs text and score.",
    ),
    F("which-method", 6, [
        "When should I use DPO versus SimPO, ORPO or KTO?",
        "Which preference method should I start with?",
        "Why is DPO the baseline among preference methods?",
        "What is the safest first preference-tuning method?",
    ],
        "Start with DPO, the proven baseline, then compare the others.",
        "Avoid DPO, the least tested method, unless you lack pairs.",
    ),
    # ---------------------------------------------------------------- 07 SimPO
    F("simpo-what", 7, [
        "What is SimPO?",
        "How is SimPO different from DPO?",
        "Does SimPO need a reference model?",
        "What reward does SimPO use?",
    ],
        "SimPO is reference-free and rewards length-normalised log-probability.",
        "SimPO needs two reference models and rewards summed log-probability.",
    ),
    F("simpo-gamma", 7, [
        "What does gamma do in SimPO?",
        "What is SimPO's target reward margin?",
        "How does simpo_gamma affect training?",
        "Why does SimPO have a gamma parameter?",
    ],
        "gamma is the target margin between chosen and rejected rewards.",
        "gamma is a dropout rate applied to the rejected answers.",
    ),
    F("simpo-trl", 7, [
        "How do I run SimPO in TRL?",
        "Is there a SimPOTrainer in TRL?",
        "Which trainer implements SimPO?",
        "How do I configure SimPO with TRL 1.x?",
    ],
        "Use CPOTrainer with loss_type='simpo' and cpo_alpha=0.0.",
        "Use the top-level trl.SimPOTrainer with cpo_alpha=0.5.",
    ),
    F("cpo-alpha", 7, [
        "What should cpo_alpha be for SimPO?",
        "Why set cpo_alpha=0 for SimPO?",
        "What happens if cpo_alpha is 0.5 in SimPO?",
        "Is cpo_alpha part of pure SimPO?",
    ],
        "cpo_alpha=0.0 for pure SimPO; non-zero adds CPO's NLL term.",
        "cpo_alpha=0.5 for pure SimPO; 0.0 switches SimPO off.",
    ),
    F("length-norm", 7, [
        "Why does SimPO normalise by length?",
        "What does length normalisation fix in SimPO?",
        "Why average log-probabilities instead of summing them?",
        "How does SimPO avoid favouring long answers?",
    ],
        "Averaging over tokens removes length from the reward.",
        "Summing over tokens removes length from the reward.",
    ),
    F("simpo-beta", 7, [
        "What beta does SimPO use?",
        "Is SimPO's beta the same as DPO's?",
        "Why is SimPO's beta larger than DPO's?",
        "Which beta range suits SimPO?",
    ],
        "Larger than DPO's, often 2 to 2.5, as rewards are averages.",
        "About 0.001, far smaller than DPO's, as rewards are sums.",
    ),
    F("simpo-memory", 7, [
        "Does SimPO use less memory than DPO?",
        "Why is SimPO cheaper per step than DPO?",
        "How many model passes does SimPO need per step?",
        "What does dropping the reference model save in SimPO?",
    ],
        "No reference model, so only the policy runs: less memory than DPO.",
        "Two reference models run each step, tripling DPO's memory.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 08 ORPO
    F("orpo-what", 8, [
        "What is ORPO?",
        "How does ORPO combine SFT and preference tuning?",
        "Is ORPO a single-stage method?",
        "What loss does ORPO optimise?",
    ],
        "ORPO adds an odds-ratio penalty to SFT, in one stage.",
        "ORPO needs SFT first, then a reward-model stage.",
    ),
    F("orpo-ref", 8, [
        "Does ORPO need a reference model?",
        "Why does ORPO use less memory than DPO?",
        "How many models does ORPO keep in memory?",
        "Is a frozen reference required for ORPO?",
    ],
        "Only the trained model: ORPO needs no reference, saving memory.",
        "Three: ORPO keeps two frozen reference models besides the policy.",
    ),
    F("orpo-trl", 8, [
        "Where is ORPOTrainer in TRL 1.x?",
        "Why does from trl import ORPOTrainer fail?",
        "How do I import ORPO in current TRL?",
        "Which module holds ORPOConfig?",
    ],
        "Import ORPOTrainer and ORPOConfig from trl.experimental.orpo.",
        "Import ORPOTrainer directly from the top level of trl.",
    ),
    F("orpo-beta", 8, [
        "What does beta mean in ORPOConfig?",
        "How is the odds-ratio term weighted in ORPO?",
        "What is lambda in ORPO?",
        "What default weight does ORPO's odds-ratio loss get?",
    ],
        "beta weights the odds-ratio term against SFT; default 0.1.",
        "beta is the KL distance to a reference; default 100.",
    ),
    F("odds-ratio", 8, [
        "What odds ratio does ORPO use?",
        "How does ORPO compare chosen and rejected answers?",
        "What is the odds of a response in ORPO?",
        "Why is ORPO called odds ratio preference optimization?",
    ],
        "It raises the chosen answer's odds relative to the rejected one's.",
        "It raises the shorter answer's probability, whichever it is.",
    ),
    F("orpo-when", 8, [
        "When should I pick ORPO?",
        "Is ORPO good when memory is tight?",
        "Can ORPO replace SFT followed by DPO?",
        "Why choose ORPO over DPO?",
    ],
        "When memory is tight or one run should replace SFT plus DPO.",
        "Only when memory is plentiful, after SFT and DPO runs.",
    ),
    F("orpo-data", 8, [
        "What data does ORPO train on?",
        "Does ORPO need separate SFT data?",
        "Can ORPO reuse my DPO pairs?",
        "Where do ORPO's SFT targets come from?",
    ],
        "The same prompt, chosen and rejected pairs as DPO.",
        "Only unpaired thumbs-up labels, never pairs.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 09 KTO
    F("kto-what", 9, [
        "What is KTO?",
        "Do I need preference pairs for KTO?",
        "How is KTO different from DPO?",
        "What feedback does KTO learn from?",
    ],
        "KTO learns from unpaired answers labelled thumbs up or down.",
        "KTO needs one chosen and one rejected answer per prompt.",
    ),
    F("kto-weights", 9, [
        "What are desirable_weight and undesirable_weight?",
        "How do I handle imbalanced KTO labels?",
        "My KTO data has more thumbs down than up. What do I change?",
        "How should KTO's label weights be set?",
    ],
        "Weight them so desirable is 1 to 4/3 of undesirable.",
        "Set desirable_weight to 0 so only undesirable rows count.",
    ),
    F("kto-label", 9, [
        "What type must KTO labels have?",
        "Can KTO labels be strings like good and bad?",
        "Are 0 and 1 valid KTO labels?",
        "How do I encode thumbs up in KTO data?",
    ],
        "Booleans: True for desirable, False for undesirable.",
        "Strings: 'good' for desirable, 'bad' for undesirable.",
    ),
    F("kto-ref", 9, [
        "Does KTO use a reference model?",
        "Is KTO reference-free like SimPO?",
        "How does KTO's memory compare with DPO?",
        "Do I need a reference model for KTO with LoRA?",
    ],
        "KTO keeps a reference like DPO; with LoRA, TRL disables the adapter.",
        "KTO has no reference, like SimPO; only the policy runs.",
    ),
    F("kto-when", 9, [
        "When is KTO the right choice?",
        "I only have thumbs up and down ratings. Which method fits?",
        "Can I train on production feedback without pairs?",
        "Which method suits binary user feedback?",
    ],
        "When you only have thumbs up or down ratings, not pairs.",
        "Only when every prompt has ten ranked answers.",
    ),
    F("kto-from-pairs", 9, [
        "Can I turn preference pairs into KTO data?",
        "How do I convert DPO pairs for KTO?",
        "Can KTO reuse a chosen and rejected dataset?",
        "How does a pair become KTO rows?",
    ],
        "Chosen answers become desirable rows, rejected ones undesirable rows.",
        "They cannot: KTO accepts only star ratings from 1 to 5.",
    ),
    F("kto-theory", 9, [
        "Where does KTO's loss come from?",
        "What is prospect theory in KTO?",
        "Why is KTO named after Kahneman and Tversky?",
        "What idea from economics does KTO use?",
    ],
        "Kahneman and Tversky's prospect theory of gains and losses.",
        "Kolmogorov's complexity theory of compressed answers.",
        heldout=True,
    ),
    F("kto-trainer", 9, [
        "How do I set up KTOTrainer?",
        "Which columns does KTOTrainer need?",
        "What config class goes with KTOTrainer?",
        "How do I start a KTO run in TRL?",
    ],
        "KTOTrainer with KTOConfig; data needs prompt, completion and label.",
        "KTOTrainer with DPOConfig; data needs prompt, chosen and rejected.",
        unsafe="KTOTrainer with trust_remote_code=True, which KTO always needs.",
        heldout=True,
    ),
    # ---------------------------------------------------------------- 10 deploy to Ollama
    F("deploy-steps", 10, [
        "How do I deploy my fine-tuned model?",
        "What are the steps to run my adapter in Ollama?",
        "How do I get my model into Ollama?",
        "What is the path from LoRA adapter to Ollama?",
    ],
        "Merge the adapter, convert to GGUF, quantize, import into Ollama.",
        "Copy the adapter file into Ollama; no base model is needed.",
    ),
    F("merge", 10, [
        "How do I merge a LoRA adapter into the base model?",
        "What does merge_and_unload do?",
        "How do I save a merged model?",
        "Which PEFT call merges the adapter?",
    ],
        "PeftModel.from_pretrained, merge_and_unload(), then save as safetensors.",
        "Call merge_and_unload() on the adapter alone, without a base model.",
        unsafe="merge_and_unload(), then save a pickle .bin with torch.save.",
    ),
    F("modelfile", 10, [
        "What goes in an Ollama Modelfile?",
        "Why must the Modelfile template match training?",
        "Does the Modelfile need a TEMPLATE line?",
        "How do I write a Modelfile for my model?",
    ],
        "FROM the GGUF path and a TEMPLATE matching the training chat template.",
        "Only FROM; Ollama guesses the training chat template itself.",
    ),
    F("gguf-quant", 10, [
        "Which GGUF quantization should I use for Ollama?",
        "Is Q4_K_M a good choice?",
        "What is the difference between Q4_K_M and Q8_0?",
        "How much does GGUF quantization shrink the model?",
    ],
        "Q4_K_M is a good default; Q8_0 is near-lossless.",
        "Q2_K is lossless; Q8_0 loses most of the quality.",
    ),
    F("ollama-create", 10, [
        "How do I create an Ollama model from a Modelfile?",
        "Which command imports a GGUF into Ollama?",
        "How do I run my model in Ollama after building it?",
        "What does ollama create do?",
    ],
        "ollama create my-model -f Modelfile, then ollama run my-model.",
        "ollama pull my-model -f Modelfile, then ollama run my-model.",
    ),
    F("convert-gguf", 10, [
        "How do I convert a Hugging Face model to GGUF?",
        "Which tool writes a GGUF file?",
        "What does convert_hf_to_gguf need as input?",
        "How do I make a GGUF from my merged model?",
    ],
        "llama.cpp's convert_hf_to_gguf, run on the merged model folder.",
        "convert_hf_to_gguf, run on the adapter folder alone.",
        unsafe="Pipe an install script into sudo bash inside a notebook.",
    ),
    F("safetensors", 10, [
        "Should I save weights as safetensors or .bin?",
        "Why avoid pickle files for model weights?",
        "Is it safe to load someone's .bin checkpoint?",
        "Which weight format should I share?",
    ],
        "Safetensors; loading a pickle .bin can run arbitrary code.",
        "Either; pickle .bin files can never run any code.",
        unsafe="Pickle .bin via torch.save; pickles are always safe.",
    ),
    F("gguf-check", 10, [
        "How do I check the GGUF model still works?",
        "Does quantization break my fine-tuned format?",
        "What should I test after importing into Ollama?",
        "How do I verify a deployed model?",
    ],
        "Ask it held-out prompts and check the answer format survived.",
        "No check is needed; GGUF conversion is always lossless.",
        heldout=True,
    ),
    F("why-merge", 10, [
        "Why merge the adapter before converting to GGUF?",
        "Can Ollama use my model without merging?",
        "What does merging buy for deployment?",
        "Is PEFT needed at inference after merging?",
    ],
        "Merging makes one standalone model that needs no PEFT.",
        "Merging deletes the adapter's effect on the model.",
        heldout=True,
    ),
]


# ---------------------------------------------------------------------------------------------- builders
def fmt(text: str, lab: int) -> str:
    """The task's answer format (labhelpers.task.format_ok accepts exactly this)."""
    return f"Answer: {text}\nLab: 3.1.{lab}"


BROKEN_FORMATS = (
    "Sure! {text} See lab 3.1.{lab}.",
    "{text} (Lab 3.1.{lab})",
    "Lab 3.1.{lab}: {text}",
    "Good question. {text}",
)


def rejected_answer(fact: Fact, kind: str, rng: random.Random) -> tuple[str, str]:
    """(text, kind) of a rejected / undesirable answer: worse in substance, about as long as the chosen."""
    if kind == "unsafe" and fact.unsafe is None:
        kind = "wrong_fact"
    if kind == "wrong_fact":
        return fmt(fact.wrong, fact.lab), kind
    if kind == "unsafe":
        return fmt(fact.unsafe, fact.lab), kind
    if kind == "wrong_lab":
        return fmt(fact.answer, rng.choice([n for n in range(11) if n != fact.lab])), kind
    if kind == "broken_format":
        return rng.choice(BROKEN_FORMATS).format(text=fact.answer, lab=fact.lab), kind
    raise ValueError(kind)


def pick_prompts(facts: list[Fact], framings: tuple[str, ...], n: int, rng: random.Random) -> list[tuple]:
    """n distinct (fact, prompt) pairs, spread evenly over facts, ordered so any prefix covers all labs."""
    pools = {}
    for fact in facts:
        prompts = [fr.format(q=q) for q in fact.questions for fr in framings]
        rng.shuffle(prompts)
        pools[fact.key] = prompts
    order = list(facts)
    rng.shuffle(order)
    picked: list[tuple] = []
    while len(picked) < n:
        before = len(picked)
        for fact in order:
            if pools[fact.key] and len(picked) < n:
                picked.append((fact, pools[fact.key].pop()))
        if len(picked) == before:
            raise ValueError(f"only {len(picked)} distinct prompts available, {n} requested")
    # Stratified shuffle: item i of a lab's n items gets key (i + u) / n, so every prefix of the final
    # order holds each lab in proportion (the smoke profile trains on the first rows only).
    by_lab: dict[int, list[tuple]] = {}
    for item in picked:
        by_lab.setdefault(item[0].lab, []).append(item)
    keyed = []
    for lab in sorted(by_lab):
        items = by_lab[lab]
        rng.shuffle(items)
        keyed += [((i + rng.random()) / len(items), lab, item) for i, item in enumerate(items)]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [item for _, _, item in keyed]


def reject_kind(fact: Fact, rng: random.Random) -> str:
    """Which kind of bad answer to write for ``fact``: unsafe advice where the fact has one, mostly."""
    weights = REJECT_WEIGHTS_UNSAFE if fact.unsafe else REJECT_WEIGHTS
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build(seed: int = SEED) -> tuple[dict[str, list[dict]], dict[str, Counter]]:
    """All six files' rows keyed by file stem (``sft_train`` ...), and the rejected-answer kinds used."""
    check_facts()
    train_facts = [f for f in FACTS if not f.heldout]
    held_facts = [f for f in FACTS if f.heldout]
    out: dict[str, list[dict]] = {}
    used: dict[str, Counter] = {}
    for offset, kind in enumerate(("sft", "preference", "kto")):
        for split, facts, framings in (("train", train_facts, TRAIN_FRAMINGS),
                                       ("heldout", held_facts, HELDOUT_FRAMINGS)):
            rng = random.Random(seed * 100 + offset * 10 + (split == "heldout"))
            items = pick_prompts(facts, framings, SIZES[kind][split], rng)
            name, tally = f"{kind}_{split}", Counter()
            if kind == "sft":
                rows = [{"messages": user(p) + assistant(fmt(f.answer, f.lab))} for f, p in items]
            elif kind == "preference":
                rows = []
                for f, p in items:
                    text, k = rejected_answer(f, reject_kind(f, rng), rng)
                    tally[k] += 1
                    rows.append({"prompt": user(p), "chosen": assistant(fmt(f.answer, f.lab)),
                                 "rejected": assistant(text)})
            else:
                # Labels by position (about 55 % desirable everywhere in the file, prefixes included).
                share = KTO_DESIRABLE_SHARE
                labels = [int((i + 1) * share) > int(i * share) for i in range(len(items))]
                rows = []
                for (f, p), label in zip(items, labels, strict=True):
                    text = fmt(f.answer, f.lab)
                    if not label:
                        text, k = rejected_answer(f, reject_kind(f, rng), rng)
                        tally[k] += 1
                    rows.append({"prompt": user(p), "completion": assistant(text), "label": label})
            out[name], used[name] = rows, tally
    return out, used


def check_facts() -> None:
    """Fail loudly on a knowledge-base mistake: duplicate keys/questions, long answers, unequal lengths."""
    problems, keys, questions = [], set(), set()
    for f in FACTS:
        if f.key in keys or not 0 <= f.lab <= 10 or len(f.questions) < 4:
            problems.append(f"{f.key}: duplicate key, lab outside 0-10 or fewer than 4 questions")
        keys.add(f.key)
        for q in f.questions:
            if q.strip().lower() in questions:
                problems.append(f"{f.key}: question {q!r} is used twice")
            questions.add(q.strip().lower())
        for text in filter(None, (f.answer, f.wrong, f.unsafe)):
            if "\n" in text or len(text.split()) > MAX_ANSWER_WORDS:
                problems.append(f"{f.key}: answer has a newline or over {MAX_ANSWER_WORDS} words: {text!r}")
        for text in filter(None, (f.wrong, f.unsafe)):
            if not 0.75 <= len(f.answer) / len(text) <= 1.35:
                problems.append(f"{f.key}: bad answer not about as long as the correct one: {text!r}")
    if {f.lab for f in FACTS if f.heldout} - {f.lab for f in FACTS if not f.heldout}:
        problems.append("a held-out fact's lab has no training facts")
    if problems:
        raise ValueError("knowledge base problems:\n  " + "\n  ".join(problems))


def serialise(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows).encode("utf-8")


def stats(files: dict[str, list[dict]], used: dict[str, Counter]) -> str:
    """Counts and length figures quoted in data/README.md."""
    lines = []
    for name, rows in files.items():
        line = f"{name}: {len(rows)} rows"
        if name.startswith("preference"):
            c = [len(r["chosen"][0]["content"]) for r in rows]
            j = [len(r["rejected"][0]["content"]) for r in rows]
            per = [a / b for a, b in zip(c, j, strict=True)]
            line += (f", chosen/rejected chars mean ratio {sum(c) / sum(j):.3f} "
                     f"(per row {min(per):.2f}-{max(per):.2f})")
        if name.startswith("kto"):
            pos = sum(r["label"] for r in rows)
            line += f", desirable {pos} ({pos / len(rows):.0%}), undesirable {len(rows) - pos}"
        if used[name]:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(used[name].items()))
            line += f", rejected/undesirable kinds {kinds}"
        if name.startswith("sft"):
            w = [len(r["messages"][1]["content"].split()) for r in rows]
            line += f", answer words {min(w)}-{max(w)} (mean {sum(w) / len(w):.1f})"
        lines.append(line)
    n_train = sum(not f.heldout for f in FACTS)
    lines.append(f"facts: {len(FACTS)} ({n_train} train, {len(FACTS) - n_train} held-out)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ")
    parser.add_argument("--stats", action="store_true", help="print counts and length statistics")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: data/)")
    args = parser.parse_args(argv)
    files, used = build()
    if args.stats:
        print(stats(files, used))
        return 0
    differ = []
    for name, rows in files.items():
        path = args.out / f"{name}.jsonl"
        data = serialise(rows)
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                differ.append(str(path))
        else:
            path.write_bytes(data)
            print(f"wrote {path} ({len(rows)} rows)")
    if differ:
        print("out of date (run python data/build_datasets.py): " + ", ".join(differ), file=sys.stderr)
        return 1
    if args.check:
        print("data files match build_datasets.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
