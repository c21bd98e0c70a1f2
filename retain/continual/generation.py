"""Greedy generation with one adapter per row.

Rows are decoded by the one decoder (``retain.evaluation.decoding``): grouped by
adapter and token length, each group runs with its own PEFT adapter passed per
row (``adapter_names``; ``"__base__"`` or ``None`` for no adapter: the base model,
where the switch sends a general input), so a mix of tasks costs
one call, with the shared prefix cached once per adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from retain.evaluation.decoding import generate_texts

BASE = "__base__"


def generate_routed(model, tokenizer, prompts: Sequence[str], adapter_names: Sequence[str | None], **kwargs) -> list[str]:
    """Continuation of ``prompts[i]`` with adapter ``adapter_names[i]`` (None: no adapter), in order (see ``generate_texts``)."""
    if len(prompts) != len(adapter_names):
        raise ValueError("one adapter name per prompt")
    names = [BASE if a is None else a for a in adapter_names]
    return generate_texts(model, tokenizer, prompts, adapter_names=names, **kwargs)
