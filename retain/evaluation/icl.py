"""k-shot in-context evaluation: fast (batched, shared-prefix) and simple engines.

The fast engine, for decoder-only models:

1. tokenises every full prompt (few-shot prefix + query) and takes the longest
   run of tokens they all start with as the shared prefix. It is found on
   tokens, not text: a tokenizer may split the prefix text differently once a
   query follows it (SmolLM2's ends "\n\n" as one token, but "\n\nInput" as
   "\n" "\n" "Input"), so the tokens the model sees are exactly those of the
   full prompt, as in the simple engine;
2. runs ``[soft prompt] + prefix`` once and keeps its key/value cache;
3. groups the rest of the prompts by *equal token length*, so a batch needs no
   padding at all: the cache is repeated over the batch and greedy decoding
   (or the log-likelihood of each answer choice) continues from it; rows that
   reach a newline or end-of-sequence leave the batch.

No padding means no position-id issue (PEFT's prompt-tuning ``generate``
ignores ``position_ids``, so left-padded batches with a soft prompt differ from
one-at-a-time decoding); the soft prompt is prepended here as embeddings to the
prefix, exactly as PEFT does in ``forward``. The simple engine runs one prompt
at a time through ``generate``/``forward`` (the reference the fast one is
tested against: same predictions, same scores). Seq2seq models use batched
``generate_texts`` (the encoder sees the whole prompt, nothing to reuse).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from retain.data import target_text
from retain.evaluation.generation import generate_texts


# ------------------------------------------------------------------ helpers
def split_soft_prompt(model):
    """(model that runs the tokens, soft prompt embeddings [1, p, d] or None)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return model, None
    if isinstance(model, PeftModel) and model.peft_config[model.active_adapter].is_prompt_learning:
        with torch.no_grad():
            prompt = model.get_prompt(1)
        core = model.get_base_model()
        return core, prompt.to(core.get_input_embeddings().weight.dtype)
    return model, None


def eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    cfg = getattr(model, "generation_config", None)
    val = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    for v in ([val] if isinstance(val, int) else (val or [])):
        ids.add(int(v))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _Prefix:
    """The cached ``[soft prompt] + prefix`` and how prompts split against it."""

    def __init__(self, core, soft, prefix_ids: list[int]):
        self.core, self.soft, self.prefix_ids = core, soft, list(prefix_ids)
        self._caches: dict[bool, tuple] = {}

    def split(self, full_ids: list[int]) -> tuple[bool, list[int]]:
        """(uses the shared text prefix, tokens to run after the cache)."""
        p = len(self.prefix_ids)
        if p and len(full_ids) > p and full_ids[:p] == self.prefix_ids:
            return True, full_ids[p:]
        return False, full_ids

    @torch.no_grad()
    def cache(self, shared: bool):
        """(past key values, last logits) of the cached part, or (None, None)."""
        if shared not in self._caches:
            parts = []
            if self.soft is not None:
                parts.append(self.soft)
            if shared and self.prefix_ids:
                ids = torch.tensor([self.prefix_ids], device=_device(self.core))
                parts.append(self.core.get_input_embeddings()(ids))
            if not parts:
                self._caches[shared] = (None, None)
            else:
                out = self.core(inputs_embeds=torch.cat(parts, dim=1), use_cache=True)
                self._caches[shared] = (out.past_key_values, out.logits[:, -1])
        return self._caches[shared]

    def expanded(self, shared: bool, batch: int):
        cache, _ = self.cache(shared)
        if cache is None:
            return None
        c = copy.deepcopy(cache)
        if batch > 1:
            c.batch_repeat_interleave(batch)
        return c


def common_prefix(seqs: list[list[int]], keep: int = 0) -> list[int]:
    """The longest run of tokens every sequence starts with, leaving at least ``keep`` tokens of each after it."""
    if not seqs:
        return []
    n = min(len(x) for x in seqs) - keep
    first = seqs[0]
    k = 0
    while k < n and all(x[k] == first[k] for x in seqs):
        k += 1
    return first[:max(k, 0)]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _groups(keys: list, batch_size: int):
    """Indices grouped by key, in chunks of at most batch_size."""
    by = defaultdict(list)
    for i, k in enumerate(keys):
        by[k].append(i)
    for k in sorted(by, key=str):
        idx = by[k]
        for s in range(0, len(idx), batch_size):
            yield k, idx[s:s + batch_size]


# -------------------------------------------------------------- generation
@torch.no_grad()
def generate_shared(model, tokenizer, prefix: str, suffixes: list[str], *, is_seq2seq: bool = False,
                    max_new_tokens: int = 32, batch_size: int = 32, progress: bool = False, desc: str = "eval") -> list[str]:
    """Greedy first-line continuations of ``prefix + suffix`` for every suffix (fast engine)."""
    if is_seq2seq:
        return generate_texts(model, tokenizer, [prefix + s for s in suffixes], is_seq2seq=True,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, desc=desc)
    was_training = model.training
    model.eval()
    core, soft = split_soft_prompt(model)
    full = [_ids(tokenizer, prefix + s) for s in suffixes]
    pre = _Prefix(core, soft, common_prefix(full, keep=1))  # at least one token of each prompt runs after the cache
    stops = eos_ids(model, tokenizer)
    dev = _device(core)
    splits = [pre.split(ids) for ids in full]
    keys = [(shared, len(rest)) for shared, rest in splits]
    out = [""] * len(suffixes)
    groups = list(_groups(keys, batch_size))
    try:
        for (shared, _), idx in tqdm(groups, desc=desc, disable=not progress, leave=False):
            cache = pre.expanded(shared, len(idx))
            ids = torch.tensor([splits[i][1] for i in idx], device=dev)
            res = core(input_ids=ids, past_key_values=cache, use_cache=True)
            cache, logits = res.past_key_values, res.logits[:, -1]
            active = list(range(len(idx)))  # positions in idx still generating
            gen: list[list[int]] = [[] for _ in idx]
            for step in range(max_new_tokens):
                nxt = logits.argmax(-1).tolist()
                keep = []
                for row, tok in zip(active, nxt):
                    gen[row].append(tok)
                    if tok in stops or "\n" in tokenizer.decode(gen[row], skip_special_tokens=True):
                        continue
                    keep.append(row)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(active):
                    sel = [active.index(r) for r in keep]
                    cache.batch_select_indices(torch.tensor(sel, device=dev))
                    nxt = [nxt[j] for j in sel]
                active = keep
                res = core(input_ids=torch.tensor(nxt, device=dev)[:, None], past_key_values=cache, use_cache=True)
                cache, logits = res.past_key_values, res.logits[:, -1]
            for row, i in enumerate(idx):
                text = tokenizer.decode(gen[row], skip_special_tokens=True)
                out[i] = text.strip().split("\n")[0].strip()
    finally:
        model.train(was_training)
    return out


def generate_simple(model, tokenizer, prompts: list[str], *, is_seq2seq: bool = False, max_new_tokens: int = 32,
                    progress: bool = False, desc: str = "eval") -> list[str]:
    """The straightforward evaluator: one whole prompt at a time through ``generate``."""
    return generate_texts(model, tokenizer, prompts, is_seq2seq=is_seq2seq, max_new_tokens=max_new_tokens,
                          batch_size=1, progress=progress, desc=desc)


# ---------------------------------------------------------- log-likelihood
def _continuation(tokenizer, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) such that their concatenation is how the
    model sees ``context + answer`` (the answer after a space, as in training)."""
    cont_text = target_text(context, choice, False)
    ctx = _ids(tokenizer, context)
    full = _ids(tokenizer, context + cont_text)
    if len(full) > len(ctx) and full[:len(ctx)] == ctx:
        return ctx, full[len(ctx):]
    return ctx, _ids(tokenizer, cont_text)


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
    pre = _Prefix(core, soft, common_prefix([ctx for item in pairs for ctx, _ in item]))
    dev = _device(core)
    rows = []  # (item, choice index, shared, tokens after the cache, start of the continuation in them, n cont)
    for i, item in enumerate(pairs):
        for j, (ctx, cont) in enumerate(item):
            shared, rest = pre.split(ctx + cont)
            start = len(rest) - len(cont)
            if start < 1 and pre.cache(shared)[0] is None:  # nothing before the answer: score from an empty context
                start = 1
            rows.append((i, j, shared, rest, start, len(cont)))
    out = [[0.0] * len(cs) for cs in choices]
    keys = [(r[2], len(r[3])) for r in rows]
    try:
        for (shared, _), idx in tqdm(list(_groups(keys, batch_size)), desc=desc, disable=not progress, leave=False):
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
    out = []
    try:
        for p, cs in zip(prompts, choices):
            row = []
            for c in cs:
                ctx, cont = _continuation(tokenizer, p, c)
                if is_seq2seq:
                    dev = _device(model)
                    cont_ids = _ids(tokenizer, c) + [tokenizer.eos_token_id]
                    logits = model(input_ids=torch.tensor([ctx], device=dev), labels=torch.tensor([cont_ids], device=dev)).logits
                    logp = torch.log_softmax(logits.float(), -1)[0]
                    row.append(float(logp[torch.arange(len(cont_ids)), torch.tensor(cont_ids)].sum()))
                    continue
                seq = ctx + cont
                if not ctx:
                    seq = [tokenizer.eos_token_id] + seq
                    ctx = [tokenizer.eos_token_id]
                ids = torch.tensor([seq], device=_device(model))
                logits = model(input_ids=ids).logits.float()[0]
                logits = logits[-len(seq):]  # PEFT prompt tuning returns logits for the virtual tokens too
                logp = torch.log_softmax(logits, -1)
                pos = torch.arange(len(ctx) - 1, len(seq) - 1)
                row.append(float(logp[pos, torch.tensor(cont)].sum()))
            out.append(row)
    finally:
        model.train(was_training)
    return out
