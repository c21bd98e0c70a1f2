"""k-shot in-context evaluation: the fast (batched, shared-prefix) and simple engines.

Generation runs through ``retain.evaluation.decoding`` (the one decoder: the
cached-prefix engine for decoder-only models, see its docstring). Here are the
log-likelihood scorers: the fast one reuses the same cached ``[soft prompt] +
shared prefix`` and groups rows by equal token length; the simple one scores
one (prompt, choice) at a time over the whole sequence (the reference the fast
one is tested against). Every context starts with the tokenizer's leading
special tokens (``retain.tokens``); an empty one is the BOS (or EOS) token.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from retain.data import target_text
from retain.evaluation.decoding import decode_causal, decode_seq2seq, generate_simple, split_soft_prompt
from retain.evaluation.prefix import Prefix, common_prefix, device_of, groups
from retain.tokens import context_ids, prompt_ids, text_ids

__all__ = ["common_prefix", "generate_shared", "generate_simple", "loglik_shared", "loglik_simple", "split_soft_prompt"]


def _ids(tokenizer, text: str) -> list[int]:
    """Prompt ids as every engine feeds them (with the tokenizer's leading special tokens)."""
    return prompt_ids(tokenizer, text)


# -------------------------------------------------------------- generation
def generate_shared(model, tokenizer, prefix: str, suffixes: list[str], *, is_seq2seq: bool = False,
                    max_new_tokens: int = 32, batch_size: int = 32, progress: bool = False, desc: str = "eval") -> list[str]:
    """First-line continuations of ``prefix + suffix`` for every suffix (fast engine; ``decoding.current()``)."""
    ids = [prompt_ids(tokenizer, prefix + s, is_seq2seq=is_seq2seq) for s in suffixes]
    limits = [max_new_tokens] * len(ids)
    if is_seq2seq:
        return decode_seq2seq(model, tokenizer, ids, max_new_tokens=limits, batch_size=batch_size, progress=progress, desc=desc)
    return decode_causal(model, tokenizer, ids, max_new_tokens=limits, batch_size=batch_size, progress=progress, desc=desc)


# ---------------------------------------------------------- log-likelihood
def _continuation(tokenizer, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) such that their concatenation is how the
    model sees ``context + answer`` (the answer after a space, as in training)."""
    cont_text = target_text(context, choice, False)
    ctx = context_ids(tokenizer, context)
    full = context_ids(tokenizer, context + cont_text)
    if len(full) > len(ctx) and full[:len(ctx)] == ctx:
        return ctx, full[len(ctx):]
    return ctx, text_ids(tokenizer, cont_text)


@torch.no_grad()
def loglik_shared(model, tokenizer, prefix: str, suffixes: list[str], choices: list[list[str]], *,
                  is_seq2seq: bool = False, batch_size: int = 32, progress: bool = False, desc: str = "eval") -> list[list[float]]:
    """Sum of log-probabilities of each answer choice after ``prefix + suffix`` (fast engine)."""
    if is_seq2seq:
        return loglik_simple(model, tokenizer, [prefix + s for s in suffixes], choices, is_seq2seq=True)
    was_training = model.training
    model.eval()
    core, soft = split_soft_prompt(model)
    pairs = [[_continuation(tokenizer, prefix + s, c) for c in cs] for s, cs in zip(suffixes, choices)]
    pre = Prefix(core, soft, common_prefix([ctx for item in pairs for ctx, _ in item]))
    dev = device_of(core)
    rows = []  # (item, choice index, shared, tokens after the cache, start of the continuation in them, n cont)
    for i, item in enumerate(pairs):
        for j, (ctx, cont) in enumerate(item):
            shared, rest = pre.split(ctx + cont)
            start = len(rest) - len(cont)
            rows.append((i, j, shared, rest, start, len(cont)))
    out = [[0.0] * len(cs) for cs in choices]
    keys = [(r[2], len(r[3])) for r in rows]
    try:
        for (shared, _), idx in tqdm(list(groups(keys, batch_size)), desc=desc, disable=not progress, leave=False):
            cache = pre.expanded(shared, len(idx))
            ids = torch.tensor([rows[k][3] for k in idx], device=dev)
            logits = core(input_ids=ids, past_key_values=cache, use_cache=cache is not None).logits.float()
            _, last = pre.cache(shared)
            if last is not None:  # the cached part's last logits predict the first token
                logits = torch.cat([last.float().expand(len(idx), -1)[:, None], logits], dim=1)
                offset = 0
            else:
                offset = 1
            logp = torch.log_softmax(logits, dim=-1)
            for b, k in enumerate(idx):
                i, j, _, rest, start, n = rows[k]
                pos = torch.arange(start, start + n, device=dev)
                toks = torch.tensor(rest[start:start + n], device=dev)
                out[i][j] = float(logp[b, pos - offset, toks].sum())
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def loglik_simple(model, tokenizer, prompts: list[str], choices: list[list[str]], *, is_seq2seq: bool = False,
                  **_) -> list[list[float]]:
    """The straightforward scorer: one (prompt, choice) at a time, whole sequence."""
    was_training = model.training
    model.eval()
    dev = device_of(model)
    out = []
    try:
        for p, cs in zip(prompts, choices):
            row = []
            for c in cs:
                if is_seq2seq:
                    enc = prompt_ids(tokenizer, p, is_seq2seq=True) or [tokenizer.eos_token_id]
                    cont_ids = text_ids(tokenizer, c) + [tokenizer.eos_token_id]
                    logits = model(input_ids=torch.tensor([enc], device=dev), labels=torch.tensor([cont_ids], device=dev)).logits
                    logp = torch.log_softmax(logits.float(), -1)[0]
                    row.append(float(logp[torch.arange(len(cont_ids)), torch.tensor(cont_ids)].sum()))
                    continue
                ctx, cont = _continuation(tokenizer, p, c)
                seq = ctx + cont
                logits = model(input_ids=torch.tensor([seq], device=dev)).logits.float()[0]
                logits = logits[-len(seq):]  # PEFT prompt tuning returns logits for the virtual tokens too
                logp = torch.log_softmax(logits, -1)
                pos = torch.arange(len(ctx) - 1, len(seq) - 1)
                row.append(float(logp[pos, torch.tensor(cont)].sum()))
            out.append(row)
    finally:
        model.train(was_training)
    return out
