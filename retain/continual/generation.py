"""Greedy generation with one adapter per row, in one pass per batch.

PEFT applies each row's LoRA adapter inside the same forward pass
(``generate(..., adapter_names=[...])``; ``"__base__"`` for no adapter), so
a batch mixing inputs of different tasks costs one generation call.
Rows are sorted by length and batched like ``retain.evaluation.generate_texts``.
"""

from __future__ import annotations

from typing import Sequence

import torch

BASE = "__base__"


@torch.no_grad()
def generate_routed(model, tokenizer, prompts: Sequence[str], adapter_names: Sequence[str], *, is_seq2seq: bool,
                    max_new_tokens: int | Sequence[int] = 32, batch_size: int = 16, first_line: bool = True,
                    **generate_kwargs) -> list[str]:
    """Continuation of ``prompts[i]`` with adapter ``adapter_names[i]``, in order.

    ``max_new_tokens`` may be one number per row (the batch generates the
    longest of its rows, each row is then cut to its own length in tokens).
    Other keyword arguments go to ``model.generate`` (e.g. ``min_new_tokens``).
    """
    if len(prompts) != len(adapter_names):
        raise ValueError("one adapter name per prompt")
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [""] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right" if is_seq2seq else "left"
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            kw = dict(max_new_tokens=max(limits[i] for i in idx), do_sample=False, pad_token_id=tokenizer.pad_token_id,
                      adapter_names=[adapter_names[i] for i in idx], **generate_kwargs)
            if first_line:
                kw.update(stop_strings=["\n"], tokenizer=tokenizer)
            seq = model.generate(**enc, **kw)
            new = seq if is_seq2seq else seq[:, enc["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                text = tokenizer.decode(new[row][: limits[i] + (1 if is_seq2seq else 0)], skip_special_tokens=True)
                out[i] = text.strip().split("\n")[0].strip() if first_line else text.strip()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out
