"""Batched greedy generation for causal and seq2seq models (with or without a soft prompt)."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    is_seq2seq: bool,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    first_line: bool = True,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Greedy continuations of ``prompts``, in order.

    Prompts are sorted by length and batched (left padding for causal models) so
    that little work goes into padding. With ``first_line`` each row stops at
    its first newline and only that line is returned, stripped.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right" if is_seq2seq else "left"
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if first_line:
        kwargs.update(stop_strings=["\n"], tokenizer=tokenizer)
    try:
        bar = tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False)
        for start in bar:
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(_device(model)) for k, v in enc.items()}
            seq = model.generate(**enc, **kwargs)
            new = seq if is_seq2seq else seq[:, enc["input_ids"].shape[1]:]
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text.strip().split("\n")[0].strip() if first_line else text.strip()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out
