"""Padded batches in which every example carries its own task's soft prompt (multi-task ProMoT stage 2 on an
encoder-decoder model, a model the packing check refuses, or ``--no-packing``).

PEFT's prompt-tuning forward prepends ``get_prompt(batch_size)``: the active adapter's prompt, the same for every
row. While a stage runs, a row's ``prompt_task`` (an index into the stage's prompt adapters) makes ``get_prompt``
return each row's own task's prompt instead; everything else (labels, attention mask, encoder or decoder) is PEFT's
own forward, so each example's loss is PEFT's single-task loss under its task's adapter. The packed path is
``engine.prompt_packing`` (``slot_task``).
"""

from __future__ import annotations

import contextlib
import types

import torch

from retain.engine.prompt_packing import task_prompts


class TaskCollator:
    """A padding collator that keeps each row's ``prompt_task`` as a [batch] tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        tasks = torch.tensor([int(f["prompt_task"]) for f in features], dtype=torch.long)
        batch = self.inner([{k: v for k, v in f.items() if k != "prompt_task"} for f in features])
        batch["prompt_task"] = tasks
        return batch


@contextlib.contextmanager
def per_example_prompts(model, adapters):
    """While training: ``model(..., prompt_task=...)`` runs PEFT's forward with row i's prompt being the one of
    ``adapters[prompt_task[i]]``; any other call (evaluation, generation) is PEFT's own. Restored on exit."""
    original_forward, original_get_prompt, current = model.forward, model.get_prompt, {}

    def get_prompt(self, batch_size, task_ids=None, **kwargs):
        tasks = current.get("tasks")
        if tasks is None:
            return original_get_prompt(batch_size, task_ids=task_ids, **kwargs)
        return task_prompts(self, adapters)[tasks.to(self.prompt_encoder[adapters[0]].embedding.weight.device)]

    def forward(self, *args, prompt_task=None, **kwargs):
        if prompt_task is None:
            return original_forward(*args, **kwargs)
        current["tasks"] = prompt_task
        try:
            return original_forward(*args, **kwargs)
        finally:
            current.pop("tasks", None)

    saved = {k: model.__dict__.get(k) for k in ("forward", "get_prompt")}  # instance attributes set earlier, if any
    model.forward, model.get_prompt = types.MethodType(forward, model), types.MethodType(get_prompt, model)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                del model.__dict__[k]
            else:
                setattr(model, k, v)
