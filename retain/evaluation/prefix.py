"""The cached ``[soft prompt] + prefix`` of the causal engine (``retain.evaluation.decoding``, and the
log-likelihood scorer in ``icl``): the shared prefix of a batch of prompts, its key/value cache per adapter,
and whether a model gives a row the same logits when shorter rows beside it are padded after that cache."""

from __future__ import annotations

import copy
import weakref
from collections import defaultdict

import torch


def device_of(model) -> torch.device:
    return next(model.parameters()).device


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


def groups(keys: list, batch_size: int):
    """Indices grouped by key, in chunks of at most batch_size."""
    by = defaultdict(list)
    for i, k in enumerate(keys):
        by[k].append(i)
    for k in sorted(by, key=str):
        idx = by[k]
        for s in range(0, len(idx), batch_size):
            yield k, idx[s:s + batch_size]


class Prefix:
    """The cached ``[soft prompt] + prefix`` (per adapter) and how prompts split against it."""

    def __init__(self, core, soft, prefix_ids: list[int]):
        self.core, self.soft, self.prefix_ids = core, soft, list(prefix_ids)
        self._caches: dict[tuple, tuple] = {}

    def split(self, full_ids: list[int]) -> tuple[bool, list[int]]:
        """(uses the shared prefix, tokens to run after the cache)."""
        p = len(self.prefix_ids)
        if p and len(full_ids) > p and full_ids[:p] == self.prefix_ids:
            return True, full_ids[p:]
        return False, full_ids

    @torch.no_grad()
    def cache(self, shared: bool, adapter: str | None = None):
        """(past key values, last logits) of the cached part, or (None, None)."""
        key = (shared, adapter)
        if key not in self._caches:
            parts = []
            if self.soft is not None:
                parts.append(self.soft)
            if shared and self.prefix_ids:
                ids = torch.tensor([self.prefix_ids], device=device_of(self.core))
                parts.append(self.core.get_input_embeddings()(ids))
            if not parts:
                self._caches[key] = (None, None)
            else:
                extra = {"adapter_names": [adapter]} if adapter is not None else {}
                out = self.core(inputs_embeds=torch.cat(parts, dim=1), use_cache=True, **extra)
                self._caches[key] = (out.past_key_values, out.logits[:, -1])
        return self._caches[key]

    def expanded(self, shared: bool, batch: int, adapter: str | None = None):
        cache, _ = self.cache(shared, adapter)
        if cache is None:
            return None
        c = copy.deepcopy(cache)
        if batch > 1:
            c.batch_repeat_interleave(batch)
        return c


_PADDING_OK: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


@torch.no_grad()
def padding_is_exact(core) -> bool:
    """Does this model give a row the same logits when shorter rows beside it are padded (mask + explicit
    positions)? Checked once per model on two short sequences, after a cached prefix; where it does not
    hold (an architecture that ignores the mask or the positions), rows are batched by equal length only."""
    if core not in _PADDING_OK:
        was = core.training
        core.eval()
        try:
            emb = core.get_input_embeddings()
            dev, n = emb.weight.device, emb.num_embeddings
            pre = core(input_ids=torch.arange(2, 6, device=dev)[None] % n, use_cache=True).past_key_values
            a, b = torch.arange(7, 12, device=dev) % n, torch.arange(13, 16, device=dev) % n
            alone = [core(input_ids=x[None], past_key_values=copy.deepcopy(pre), use_cache=True).logits[0, -1] for x in (a, b)]
            cache = copy.deepcopy(pre)
            cache.batch_repeat_interleave(2)
            ids = torch.stack([a, torch.cat([torch.zeros(2, dtype=b.dtype, device=dev), b])])
            mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]], device=dev)
            out = core(input_ids=ids, past_key_values=cache, use_cache=True, **_padded_kwargs(mask, 4))
            _PADDING_OK[core] = all(torch.allclose(out.logits[i, -1], alone[i], atol=1e-4) for i in range(2))
        except Exception:  # a model that takes no mask/positions with a cache: equal lengths only
            _PADDING_OK[core] = False
        finally:
            core.train(was)
    return _PADDING_OK[core]


def _padded_kwargs(mask: torch.Tensor, past: int) -> dict:
    """attention_mask over [cached prefix + this chunk] and position ids that skip the padding."""
    full = torch.cat([torch.ones(mask.shape[0], past, dtype=mask.dtype, device=mask.device), mask], dim=1)
    pos = (past + mask.cumsum(1) - 1).clamp(min=past)
    return {"attention_mask": full, "position_ids": pos}
