"""Text to token ids, with exactly the special tokens the model's tokenizer adds.

Every place retain tokenizes (training rows, evaluation prompts, the shared
few-shot prefix, generation, checkpoint selection, switch features) goes
through this module, so a model sees inputs shaped as in its pre-training:

* decoder-only models: the tokenizer's leading special tokens (a BOS for the
  Llama, Mistral and Gemma families; nothing for Qwen, GPT-2 or SmolLM2), once,
  at the very start, before any demonstration; no trailing ones (the model
  continues the text). A soft prompt, where there is one, goes before them,
  where PEFT puts it.
* encoder-decoder models: the encoder input exactly as the tokenizer builds it
  (T5 appends ``</s>``).

What a tokenizer adds is read off the tokenizer itself (a probe text encoded
with and without special tokens), not from a list of model names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref

_AFFIXES: weakref.WeakKeyDictionary[object, tuple[list[int], list[int]]] = weakref.WeakKeyDictionary()
_PROBE = "retain probe text"


def text_ids(tokenizer, text: str) -> list[int]:
    """The tokens of ``text`` alone, no special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """(ids the tokenizer puts before a text, ids it puts after), e.g. ([bos], []) for Llama, ([], [eos]) for T5."""
    try:
        return _AFFIXES[tokenizer]
    except (KeyError, TypeError):
        pass
    plain = text_ids(tokenizer, _PROBE)
    full = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    found = ([], [])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            found = (full[:i], full[i + len(plain):])
            break
    with contextlib.suppress(TypeError):  # not weak-referenceable: recompute next time
        _AFFIXES[tokenizer] = found
    return found


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what turns text into ids here: the vocabulary and rules (a fast tokenizer's full JSON, else its
    vocabulary), the special tokens and the ones it adds around a text. Identifies a tokenizer as
    ``models.weights_fingerprint`` identifies weights (records that reuse scores compare both)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rules = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    specials = {"map": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
                "affixes": special_affixes(tokenizer), "class": type(tokenizer).__name__}
    h = hashlib.sha256(rules.encode())
    h.update(json.dumps(specials, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def prompt_ids(tokenizer, text: str, *, is_seq2seq: bool = False) -> list[int]:
    """Model input ids of a prompt: leading specials + text (+ trailing specials for an encoder)."""
    head, tail = special_affixes(tokenizer)
    return head + text_ids(tokenizer, text) + (tail if is_seq2seq else [])


def context_ids(tokenizer, text: str) -> list[int]:
    """Prompt ids of a causal context that is never empty: with no text and no leading special token the model
    is conditioned on its BOS (or EOS) token, as lm-evaluation-harness does."""
    ids = prompt_ids(tokenizer, text)
    if ids:
        return ids
    fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [fallback]


def truncate_left(ids: list[int], keep: int, head: int) -> list[int]:
    """Cut ``ids`` to ``keep`` tokens from the left, never dropping its first ``head`` (special) tokens."""
    if len(ids) <= keep:
        return ids
    return ids[:head] + ids[len(ids) - (keep - head):] if keep > head else ids[:keep]


def pad_right(rows: list[list[int]], pad_id: int):
    """A right-padded batch: (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
