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
    max_new_tokens: int | Sequence[int] = 32,
    batch_size: int = 16,
    first_line: bool = True,
    progress: bool = False,
    desc: str = "generating",
    adapter_names: Sequence[str] | None = None,
    **generate_kwargs,
) -> list[str]:
    """Greedy continuations of ``prompts``, in order.

    Prompts are sorted by length and batched (left padding for causal models) so
    that little work goes into padding. With ``first_line`` each row stops at
    its first newline and only that line is returned, stripped.

    ``max_new_tokens`` may be one number per row (a batch generates the longest
    of its rows; each row is then cut to its own length). ``adapter_names`` gives
    each row its own PEFT adapter in the same forward pass (``"__base__"`` for
    none). Other keyword arguments go to ``model.generate`` (e.g. ``min_new_tokens``).
    """
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(prompts) or (adapter_names is not None and len(adapter_names) != len(prompts)):
        raise ValueError("max_new_tokens and adapter_names need one entry per prompt")
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right" if is_seq2seq else "left"
    kwargs = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
    if first_line:
        kwargs.update(stop_strings=["\n"], tokenizer=tokenizer)
    start_tokens = 1 if is_seq2seq else 0  # the decoder start token of seq2seq outputs
    try:
        bar = tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False)
        for start in bar:
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(_device(model)) for k, v in enc.items()}
            if adapter_names is not None:
                kwargs["adapter_names"] = [adapter_names[i] for i in idx]
            seq = model.generate(**enc, max_new_tokens=max(limits[i] for i in idx), **kwargs)
            new = seq if is_seq2seq else seq[:, enc["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                text = tokenizer.decode(new[row][: limits[i] + start_tokens], skip_special_tokens=True)
                out[i] = text.strip().split("\n")[0].strip() if first_line else text.strip()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out
