"""What the held-out scorer costs: ``labhelpers.evaluation`` vs every full sequence with logits everywhere.

Run by hand (not part of the tests), on the embedded model; about 2 minutes on 2 idle CPU cores:

    python bench/scoring.py                     # the smoke profile's held-out pairs, 3 rounds
    python bench/scoring.py --pairs 120 --rounds 2

Both sides score the same held-out preference pairs (answer tokens only, chat template), alternating in one
process, so the machine's noise hits both alike:

- **full sequences**: every (prompt, answer) sequence through the whole model in batches of 16 sequences,
  right-padded, the output layer at every position (the log-softmax at the answer positions only);
- **labhelpers**: ``evaluation.preference_pairs``: the same sequences, sorted by length and left-padded in batches
  of 16, one forward pass each, the output layer on the answer positions only (``evaluation.token_logps``).

Prints the seconds of each round, the mean ratio, and the largest difference between the two sides' scores.
"""

from __future__ import annotations

import argparse
import time


def full_sequences(model, tokenizer, rows, max_length: int, batch_size: int = 16) -> list[tuple[float, float]]:
    """(log p(chosen), log p(rejected)) per pair, every sequence run whole: the reference implementation."""
    import torch

    from labhelpers.evaluation import _encode

    seqs = _encode(tokenizer, [(r["prompt"], r[side]) for r in rows for side in ("chosen", "rejected")], max_length)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    sums = [0.0] * len(seqs)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(seqs[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            answer = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                n = len(seqs[i][0])
                ids[row, :n], attn[row, :n] = torch.tensor(seqs[i][0]), 1
                answer[row, :n] = torch.tensor(seqs[i][1], dtype=torch.bool)
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]
            target = answer[:, 1:]
            token_logps = logits[target].float().log_softmax(-1).gather(-1, ids[:, 1:][target, None]).squeeze(-1)
            for i, part in zip(chunk, torch.split(token_logps, target.sum(-1).tolist()), strict=True):
                sums[i] = float(part.sum())
    return list(zip(sums[0::2], sums[1::2], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="held-out pairs; default: the profile's")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import labhelpers as lh
    from labhelpers import evaluation

    lab = lh.profile(verbose=False)
    tokenizer = lh.load_tokenizer()
    rows = list(lh.load_lab_dataset("preference", split="heldout", limit=args.pairs or lab.pref_eval_rows))
    model = lh.load_model()
    seconds: dict[str, list[float]] = {"full sequences": [], "labhelpers": []}
    for round_ in range(args.rounds):
        t0 = time.perf_counter()
        full = full_sequences(model, tokenizer, rows, lab.max_length)
        seconds["full sequences"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        shared = evaluation.preference_pairs(model, tokenizer, rows, batch_size=16, max_length=lab.max_length)
        seconds["labhelpers"].append(time.perf_counter() - t0)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    diff = max(max(abs(c - p["chosen_logp"]), abs(r - p["rejected_logp"]))
               for (c, r), p in zip(full, shared, strict=True))
    mean = {k: sum(v) / len(v) for k, v in seconds.items()}
    print(f"{len(rows)} pairs, {args.rounds} rounds: full sequences {mean['full sequences']:.2f} s, labhelpers "
          f"{mean['labhelpers']:.2f} s, ratio {mean['labhelpers'] / mean['full sequences']:.2f}; largest score "
          f"difference {diff:.1e} nats")


if __name__ == "__main__":
    main()
