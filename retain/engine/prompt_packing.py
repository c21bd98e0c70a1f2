"""Soft-prompt stages without padding.

PEFT's prompt tuning prepends the virtual tokens once per *row* and drops ``position_ids`` (it warns), so
a padding-free row of several examples would train every example after the first without its prompt,
attending across examples. Here a packed row gives every example its prompt, its own positions and
attention within itself, so the loss is the per-example padded PEFT loss. Two layouts:

* ``shared``: ``[prompt | ex1 | ex2 | ...]``; each example sits at positions ``n .. n+L-1`` after the
  ``n`` prompt positions and attends causally to the prompt and to itself (a block mask). The prompt's
  hidden states depend only on the prompt (causal attention, it comes first), so one copy per row is
  every example's copy, computed once: a row costs its real tokens plus ``n``, not ``n`` per example.
  Needs a custom 4-D mask: eager or sdpa attention and no sliding-window layers.
* ``copies``: ``[prompt ex1 | prompt ex2 | ...]`` with positions restarting at 0 per copy (the
  transformers packed-sequence path, which flash-attention also takes); costs ``n`` per example.

Several tasks (multi-task ProMoT stage 2: a training row's ``prompt_task`` names its task's prompt adapter):
``copies`` fills each example's slots with its own task's prompt; ``shared`` puts one copy of each task's prompt
present in the row first (each at positions ``0 .. n-1``, attending only to itself) and each example attends to
its own task's copy, so every example still sees exactly the per-example PEFT input of its task.

A once-per-model check runs both layouts on two short examples against PEFT's own per-example forward
and picks the first that agrees; if neither does, the stage pads (``None``). The trained prompt is the
PEFT adapter's own embedding, so artifacts stay the standard PEFT prompt-tuning adapter.
"""

from __future__ import annotations

import contextlib
import types
import weakref

import torch

from retain.engine.packing import logits_agree, packing_is_exact

LAYOUTS = ("shared", "copies")
_LAYOUT: weakref.WeakKeyDictionary[torch.nn.Module, str | None] = weakref.WeakKeyDictionary()


class PromptPackingCollator:
    """Training rows -> one packed row with ``prompt_slots`` (where the virtual tokens go) and, for the shared layout,
    ``segments`` (0, -1, ... for the prompt copies, k for the k-th example) and ``sees`` (the prompt copy each token may
    attend to) from which the mask is built. Rows with ``prompt_task`` (an index into the stage's prompt adapters)
    also give ``slot_task``: the task whose prompt fills each slot."""

    def __init__(self, virtual: int, layout: str):
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: one of {LAYOUTS}")
        self.virtual, self.layout = virtual, layout

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        n, shared = self.virtual, self.layout == "shared"
        tasks = [int(f.get("prompt_task", 0)) for f in features]
        copy_of = {t: -b for b, t in enumerate(dict.fromkeys(tasks))} if shared else {}  # one prompt copy per task
        ids, labels, pos, slots, seg, sees, slot_task = [], [], [], [], [], [], []
        for t, c in copy_of.items():
            ids, labels, pos, slots = ids + [0] * n, labels + [-100] * n, pos + list(range(n)), slots + [True] * n
            seg, sees, slot_task = seg + [c] * n, sees + [c] * n, slot_task + [t] * n
        for k, (f, t) in enumerate(zip(features, tasks), 1):
            x, y = list(f["input_ids"]), list(f["labels"])
            head = 0 if shared else n
            ids += [0] * head + x
            # the first token of an example is never a target: in a row, what precedes it is another example
            labels += [-100] * (head + 1) + y[1:]
            pos += list(range(n + len(x))) if not shared else list(range(n, n + len(x)))
            slots += [True] * head + [False] * len(x)
            seg += [k] * (head + len(x))
            sees += [copy_of.get(t, 0)] * (head + len(x))
            slot_task += [t] * (head + len(x))
        out = {"input_ids": ids, "labels": labels, "position_ids": pos, "prompt_slots": slots}
        if shared:
            out["segments"], out["sees"] = seg, sees
        if "prompt_task" in features[0]:
            out["slot_task"] = slot_task
        return {k: torch.tensor([v], dtype=torch.bool if k == "prompt_slots" else torch.long) for k, v in out.items()}


def block_mask(segments: torch.Tensor, attn_implementation: str, dtype: torch.dtype, sees: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 1, T, T) mask of the shared layout: causal, and within the query's example or the prompt copy it sees
    (``sees``; default: segment 0, the one prompt). Boolean (True = attend) for sdpa, additive float for eager, as
    transformers' own mask builders make them."""
    t = segments.shape[-1]
    idx = torch.arange(t, device=segments.device)
    seg = segments[0]
    own_prompt = torch.zeros_like(seg) if sees is None else sees[0]
    allowed = (idx[None, :] <= idx[:, None]) & ((seg[None, :] == seg[:, None]) | (seg[None, :] == own_prompt[:, None]))
    allowed = allowed[None, None]
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def task_prompts(model, adapters) -> torch.Tensor:
    """[T, n, d]: the soft prompt of each named PEFT prompt adapter, as PEFT's ``get_prompt`` computes it."""
    return torch.stack([model.prompt_encoder[a](model.prompt_tokens[a].to(model.prompt_encoder[a].embedding.weight.device))
                        for a in adapters])


def packed_forward(model, *, input_ids, position_ids, prompt_slots, segments=None, sees=None, slot_task=None,
                   adapters=None, **kwargs):
    """The forward of a PEFT prompt-tuning model on a packed row: the slots get the soft prompt (once per
    example, or once per row for the shared layout; with ``slot_task``, the prompt of ``adapters[task]``),
    positions are the row's own."""
    embeds = model.word_embeddings(input_ids)
    if slot_task is None:
        prompt = model.get_prompt(batch_size=1)[0].to(embeds.dtype)
        fill = prompt.repeat(int(prompt_slots.sum()) // prompt.shape[0], 1)
    else:
        table = task_prompts(model, adapters).to(embeds.dtype)
        n = table.shape[1]
        fill = table[slot_task[prompt_slots][::n]].reshape(-1, table.shape[-1])  # each copy: its task's prompt
    embeds = embeds.masked_scatter(prompt_slots.unsqueeze(-1), fill)
    base = model.get_base_model()
    mask = None if segments is None else block_mask(segments, base.config._attn_implementation, embeds.dtype, sees)
    kwargs.pop("attention_mask", None)
    return base(inputs_embeds=embeds, position_ids=position_ids, attention_mask=mask, **kwargs)


@contextlib.contextmanager
def packed_prompts(model, adapters=None):
    """While training: ``model(..., prompt_slots=...)`` takes the packed path; any other call (evaluation
    inside the stage, generation) is PEFT's own forward. The model's ``forward`` is restored on exit.
    ``adapters``: the prompt adapters a row's ``slot_task`` indexes (several tasks)."""
    original = model.forward

    def forward(self, *args, prompt_slots=None, segments=None, sees=None, slot_task=None, **kwargs):
        if prompt_slots is None:
            return original(*args, **kwargs)
        return packed_forward(self, prompt_slots=prompt_slots, segments=segments, sees=sees, slot_task=slot_task,
                              adapters=adapters, **kwargs)

    before = model.__dict__.get("forward")  # an instance forward set earlier (accelerate's autocast wrapper)
    model.forward = types.MethodType(forward, model)
    try:
        yield
    finally:
        if before is None:
            del model.forward
        else:
            model.forward = before


def _has_sliding_window(config) -> bool:
    types_ = getattr(config, "layer_types", None)
    if types_ is not None:
        return any("sliding" in t for t in types_)
    return getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)


def _agrees(model, layout: str) -> bool:
    """Two short examples packed in ``layout`` give PEFT's own per-example logits (relative tolerance)."""
    emb = model.get_input_embeddings()
    dev = emb.weight.device
    rows = [torch.arange(3, 8, device=dev) % emb.num_embeddings, torch.arange(11, 14, device=dev) % emb.num_embeddings]
    n = model.peft_config[model.active_adapter].num_virtual_tokens
    apart = [model(input_ids=r.unsqueeze(0), use_cache=False).logits[0, n:] for r in rows]
    batch = PromptPackingCollator(n, layout)([{"input_ids": r.tolist(), "labels": r.tolist()} for r in rows])
    batch = {k: v.to(dev) for k, v in batch.items()}
    batch.pop("labels")
    logits = packed_forward(model, use_cache=False, **batch).logits[0]
    text = ~batch["prompt_slots"][0]
    packed = logits[text]
    want = torch.cat(apart)
    return logits_agree(packed, want)


@torch.no_grad()
def prompt_packing_layout(model) -> str | None:
    """The packed layout that is exact for this prompt-tuning model (``shared`` preferred), or None: pad."""
    if model not in _LAYOUT:
        base = model.get_base_model()
        found = None
        if packing_is_exact(base):
            was = model.training
            model.eval()
            try:
                custom_mask = base.config._attn_implementation in ("eager", "sdpa") and not _has_sliding_window(base.config)
                for layout in LAYOUTS:
                    if (layout == "copies" or custom_mask) and _agrees(model, layout):
                        found = layout
                        break
            except Exception:  # an architecture the packed path cannot drive: pad instead
                found = None
            finally:
                model.train(was)
        _LAYOUT[model] = found
    return _LAYOUT[model]
