"""The one decoder every score comes from: greedy (or beam search), explicit, recorded.

``current()`` is the decoding configuration of every path that decodes (both
evaluator engines, checkpoint selection, ``retain generate``, SwitchCIT
evaluation and routed generation): ``DECODING`` (greedy) unless a command sets
another for its duration with ``using(num_beams)`` (``--num-beams``). It is
explicit: a model's own ``generation_config`` (e.g. a ``repetition_penalty``
shipped with an instruct model) is *not* consulted, and results record
``current().record()``. Log-likelihood scoring (tasks with choices) does not
decode and is unaffected.

Beam search (``num_beams`` > 1, the paper's beam 4) is ``model.generate`` one
prompt at a time with the same explicit configuration (``decode_each``, also the
reference engine): the cached-prefix engine below is greedy only. Beams run to
an end-of-sequence token or the length budget, and the answer is the first line
of the best one, so a row's result is exactly transformers' own
``generate(num_beams=N)`` output.

Decoder-only models (the cached-prefix engine):

1. every prompt is tokenised with the tokenizer's special tokens
   (``retain.tokens``); the longest run of tokens all prompts start with is the
   shared prefix. It is found on tokens, not text: a tokenizer may split the
   prefix text differently once a query follows it;
2. ``[soft prompt] + prefix`` runs once and its key/value cache is kept (the
   soft prompt is prepended as embeddings, exactly as PEFT does in
   ``forward``);
3. the rest of the prompts are batched by length (and adapter): the cache is
   repeated over the batch, a shorter row is padded *between* the cached part
   and its own tokens, masked, with position ids that skip the padding, so
   every row sees exactly the positions it would see alone (checked once per
   model by ``padding_is_exact``; where it does not hold, a batch holds rows of
   equal length only and needs no padding); greedy decoding continues from
   there; rows that reach a newline (``first_line``) or an end-of-sequence
   token leave the batch.

Explicit positions mean no position-id issue for a soft prompt, and no reliance
on PEFT's prompt-tuning ``generate`` with a KV cache (which, on transformers
5.24 / peft 0.21.2, continues from wrong positions after the first new token). Encoder-decoder
models use ``model.generate`` with right-padded encoder inputs and the explicit
configuration. The reference engine (``generate_simple``) runs one prompt at a
time through ``model.generate`` (without the cache for a soft-prompt model).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from retain.evaluation.prefix import Prefix, _padded_kwargs, common_prefix, device_of, padding_is_exact
from retain.tokens import pad_right, prompt_ids, text_ids


@dataclass(frozen=True)
class Decoding:
    """How text is generated for scoring. One instance, used everywhere."""

    strategy: str = "greedy"
    num_beams: int = 1
    repetition_penalty: float = 1.0
    stop: str = "first line"  # the answer is the first line of the continuation, stripped
    model_generation_config: str = "ignored"

    def record(self, max_new_tokens=None) -> dict:
        out = asdict(self)
        if max_new_tokens is not None:
            out["max_new_tokens"] = max_new_tokens
        return out

    def hf_kwargs(self, model, tokenizer, max_new_tokens: int) -> dict:
        """``model.generate`` keyword arguments that pin this configuration (no model default leaks in)."""
        from transformers import GenerationConfig

        gc = GenerationConfig(do_sample=False, num_beams=self.num_beams, repetition_penalty=self.repetition_penalty,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=sorted(eos_ids(model, tokenizer)), temperature=None, top_p=None, top_k=None)
        return {"generation_config": gc}


DECODING = Decoding()
_CURRENT: ContextVar[Decoding] = ContextVar("retain_decoding", default=DECODING)


def decoding(num_beams: int = 1) -> Decoding:
    """The configuration for ``--num-beams N``: ``DECODING`` (greedy) for 1, beam search otherwise."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}")
    return DECODING if num_beams == 1 else Decoding(strategy="beam search", num_beams=num_beams)


def current() -> Decoding:
    """The decoding configuration in force (``DECODING`` unless inside ``using``)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(num_beams: int = 1):
    """Decode with ``decoding(num_beams)`` for the duration (a command's evaluation or training)."""
    token = _CURRENT.set(decoding(num_beams))
    try:
        yield current()
    finally:
        _CURRENT.reset(token)

ANSWER_MARGIN = 4
ANSWER_CAP = 256


def answer_budget(tokenizer, outputs, cap: int = ANSWER_CAP, *, given: int | None = None) -> int:
    """The generation length rule, one copy: ``given`` when set (a flag or a task's own value), else the
    longest reference answer (first 2000, as generated after the prompt: with a leading space) in tokens,
    + 4, at most ``cap``."""
    if given:
        return given
    longest = max((len(text_ids(tokenizer, " " + o)) for o in list(outputs)[:2000]), default=0)
    return min(longest + ANSWER_MARGIN, cap)


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


def _answer(tokenizer, ids: list[int], first_line: bool) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.strip().split("\n")[0].strip() if first_line else text.strip()


# -------------------------------------------------------------- causal engine
def _adapter_kwargs(adapter: str | None, rows: int) -> dict:
    return {"adapter_names": [adapter] * rows} if adapter is not None else {}


def _left_padded(rows: list[list[int]], pad_id: int, dev):
    """(ids, mask) of rows padded on the left to the longest (the padding goes after the cached prefix)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=dev)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=dev)
    return ids, mask


def _finished(tokenizer, generated: list[int], limit: int, stops: set[int], at_line_end: bool) -> bool:
    """A row stops at its length limit, an end-of-sequence token, or (``at_line_end``) its first newline."""
    if len(generated) >= limit or generated[-1] in stops:
        return True
    return at_line_end and "\n" in tokenizer.decode(generated, skip_special_tokens=True)


def _batches(keys: list, lengths: list[int], batch_size: int, pad: bool):
    """Chunks of rows with one key: consecutive by length (padded), or of equal length only."""
    by = defaultdict(list)
    for i, k in enumerate(keys):
        by[k if pad else (*k, lengths[i])].append(i)
    for k in sorted(by, key=str):
        idx = sorted(by[k], key=lambda i: lengths[i])
        for s in range(0, len(idx), batch_size):
            yield k, idx[s:s + batch_size]


@torch.no_grad()
def decode_causal(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: Sequence[int], batch_size: int = 32,
                  first_line: bool = True, adapter_names: Sequence[str] | None = None, min_new_tokens: int = 0,
                  progress: bool = False, desc: str = "generating") -> list[str]:
    """Greedy continuations of tokenised ``prompts`` by the cached-prefix engine (module docstring); beams: ``decode_each``."""
    if current().num_beams > 1:
        return decode_each(model, tokenizer, prompts, max_new_tokens=max_new_tokens, is_seq2seq=False, first_line=first_line,
                           adapter_names=adapter_names, progress=progress, desc=desc, min_new_tokens=min_new_tokens)
    was_training = model.training
    model.eval()
    core, soft = split_soft_prompt(model)
    pre = Prefix(core, soft, common_prefix(prompts, keep=1))  # at least one token of each prompt runs after the cache
    stops = eos_ids(model, tokenizer)
    dev = device_of(core)
    splits = [pre.split(ids) for ids in prompts]
    adapters = list(adapter_names) if adapter_names is not None else [None] * len(prompts)
    keys = [(a or "", shared) for a, (shared, _) in zip(adapters, splits)]
    lengths = [len(rest) for _, rest in splits]
    chunks = list(_batches(keys, lengths, batch_size, padding_is_exact(core)))
    out = [""] * len(prompts)
    try:
        for (_, shared, *_), idx in tqdm(chunks, desc=desc, disable=not progress, leave=False):
            adapter = adapters[idx[0]]
            extra = _adapter_kwargs(adapter, len(idx))
            cache = pre.expanded(shared, len(idx), adapter)
            rows, mask = _left_padded([splits[i][1] for i in idx], tokenizer.pad_token_id, dev)
            padded = _padded_kwargs(mask, cache.get_seq_length() if cache is not None else 0)
            attn, pos = padded["attention_mask"], padded["position_ids"][:, -1:]
            res = core(input_ids=rows, past_key_values=cache, use_cache=True, **padded, **extra)
            cache, logits = res.past_key_values, res.logits[:, -1]
            limit = max(max_new_tokens[i] for i in idx)
            active = list(range(len(idx)))  # positions in idx still generating
            gen: list[list[int]] = [[] for _ in idx]
            for step in range(limit):
                if step < min_new_tokens:
                    logits = logits.clone()
                    logits[:, list(stops)] = float("-inf")
                nxt = logits.argmax(-1).tolist()
                keep = []
                for row, tok in zip(active, nxt):
                    gen[row].append(tok)
                    if not _finished(tokenizer, gen[row], max_new_tokens[idx[row]], stops,
                                     first_line and step + 1 >= min_new_tokens):
                        keep.append(row)
                if not keep or step == limit - 1:
                    break
                if len(keep) < len(active):
                    sel = [active.index(r) for r in keep]
                    cache.batch_select_indices(torch.tensor(sel, device=dev))
                    nxt, attn, pos, extra = [nxt[j] for j in sel], attn[sel], pos[sel], _adapter_kwargs(adapter, len(keep))
                active = keep
                attn = torch.cat([attn, torch.ones(len(active), 1, dtype=attn.dtype, device=dev)], dim=1)
                pos = pos + 1
                res = core(input_ids=torch.tensor(nxt, device=dev)[:, None], past_key_values=cache, use_cache=True,
                           attention_mask=attn, position_ids=pos, **extra)
                cache, logits = res.past_key_values, res.logits[:, -1]
            for row, i in enumerate(idx):
                out[i] = _answer(tokenizer, gen[row][:max_new_tokens[i]], first_line)
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------ seq2seq engine
@torch.no_grad()
def decode_seq2seq(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: Sequence[int], batch_size: int = 32,
                   first_line: bool = True, adapter_names: Sequence[str] | None = None, progress: bool = False,
                   desc: str = "generating", use_cache: bool = True, **generate_kwargs) -> list[str]:
    """Greedy continuations for an encoder-decoder model: ``generate`` on right-padded encoder inputs."""
    if current().num_beams > 1:
        return decode_each(model, tokenizer, prompts, max_new_tokens=max_new_tokens, is_seq2seq=True, first_line=first_line,
                           adapter_names=adapter_names, progress=progress, desc=desc, **generate_kwargs)
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [""] * len(prompts)
    dev = device_of(model)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            idx = order[start:start + batch_size]
            ids, mask = pad_right([prompts[i] for i in idx], tokenizer.pad_token_id)
            limit = max(max_new_tokens[i] for i in idx)
            kw = dict(current().hf_kwargs(model, tokenizer, limit), use_cache=use_cache, **generate_kwargs)
            if first_line:
                kw.update(stop_strings=["\n"], tokenizer=tokenizer)
            if adapter_names is not None:
                kw["adapter_names"] = [adapter_names[i] for i in idx]
            seq = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kw)
            for row, i in enumerate(idx):
                out[i] = _answer(tokenizer, seq[row][1:1 + max_new_tokens[i]].tolist(), first_line)  # after the start token
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------ public
def generate_texts(model, tokenizer, prompts: Sequence[str], *, is_seq2seq: bool, max_new_tokens: int | Sequence[int] = 32,
                   batch_size: int = 16, first_line: bool = True, progress: bool = False, desc: str = "generating",
                   adapter_names: Sequence[str] | None = None, min_new_tokens: int = 0) -> list[str]:
    """Continuations of ``prompts`` (text), in order, with ``current()`` (greedy unless ``using(num_beams)``).

    Each prompt gets the tokenizer's special tokens (``retain.tokens.prompt_ids``). ``max_new_tokens`` may be
    one number per row. ``adapter_names`` gives each row its own PEFT adapter (``"__base__"`` for none). With
    ``first_line`` each answer is the first line of its continuation, stripped.
    """
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(prompts) or (adapter_names is not None and len(adapter_names) != len(prompts)):
        raise ValueError("max_new_tokens and adapter_names need one entry per prompt")
    if not prompts:
        return []
    ids = [prompt_ids(tokenizer, p, is_seq2seq=is_seq2seq) for p in prompts]
    if is_seq2seq:
        extra = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
        return decode_seq2seq(model, tokenizer, ids, max_new_tokens=limits, batch_size=batch_size, first_line=first_line,
                              adapter_names=adapter_names, progress=progress, desc=desc, **extra)
    return decode_causal(model, tokenizer, ids, max_new_tokens=limits, batch_size=batch_size, first_line=first_line,
                         adapter_names=adapter_names, min_new_tokens=min_new_tokens, progress=progress, desc=desc)


def generate_simple(model, tokenizer, prompts: Sequence[str], *, is_seq2seq: bool = False, max_new_tokens: int = 32,
                    first_line: bool = True, progress: bool = False, desc: str = "eval") -> list[str]:
    """The reference engine: one whole prompt at a time through ``model.generate`` (``decode_each``)."""
    ids = [prompt_ids(tokenizer, p, is_seq2seq=is_seq2seq) for p in prompts]
    return decode_each(model, tokenizer, ids, max_new_tokens=[max_new_tokens] * len(ids), is_seq2seq=is_seq2seq,
                       first_line=first_line, progress=progress, desc=desc)


@torch.no_grad()
def decode_each(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: Sequence[int], is_seq2seq: bool,
                first_line: bool = True, adapter_names: Sequence[str] | None = None, progress: bool = False,
                desc: str = "generating", **generate_kwargs) -> list[str]:
    """One tokenised prompt at a time through ``model.generate`` with ``current()``: the reference engine, and
    beam search (a soft-prompt model runs without the KV cache: PEFT's cached prompt-tuning path is not trusted).
    Greedy stops at the first newline (``first_line``); beams run to the end and keep the best beam's first line."""
    _, soft = split_soft_prompt(model)
    dec = current()
    was_training = model.training
    model.eval()
    dev = device_of(model)
    out = []
    try:
        for i in tqdm(range(len(prompts)), desc=desc, disable=not progress, leave=False):
            ids = torch.tensor([prompts[i]], device=dev)
            kw = dict(dec.hf_kwargs(model, tokenizer, max_new_tokens[i]), use_cache=soft is None, **generate_kwargs)
            if first_line and dec.num_beams == 1:
                kw.update(stop_strings=["\n"], tokenizer=tokenizer)
            if adapter_names is not None:  # PEFT repeats the names over the beams when told their number
                kw.update(adapter_names=[adapter_names[i]], num_beams=dec.num_beams)
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            new = seq[0][1:] if is_seq2seq else seq[0][ids.shape[1]:]
            out.append(_answer(tokenizer, new[:max_new_tokens[i]].tolist(), first_line))
    finally:
        model.train(was_training)
    return out
