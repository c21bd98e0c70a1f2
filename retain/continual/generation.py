"""Greedy generation with one adapter per row, in one pass per batch.

PEFT applies each row's LoRA adapter inside the same forward pass
(``generate(..., adapter_names=[...])``; ``"__base__"`` for no adapter), so a
batch mixing inputs of different tasks costs one generation call. The batching
itself is the evaluation engine's (``retain.evaluation.generate_texts``).
"""

from __future__ import annotations

from typing import Sequence

from retain.evaluation.generation import generate_texts

BASE = "__base__"


def generate_routed(model, tokenizer, prompts: Sequence[str], adapter_names: Sequence[str], **kwargs) -> list[str]:
    """Continuation of ``prompts[i]`` with adapter ``adapter_names[i]``, in order (see ``generate_texts``)."""
    if len(prompts) != len(adapter_names):
        raise ValueError("one adapter name per prompt")
    return generate_texts(model, tokenizer, prompts, adapter_names=adapter_names, **kwargs)
