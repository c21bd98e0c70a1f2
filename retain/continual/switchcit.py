"""SwitchCIT (Wu et al., 2024): one LoRA adapter per task on the frozen base, and a switch that routes
each instruction to its task's adapter, retrained after every task on stored instructions only; with a
general class (``retain.continual.general``), instructions of none of the tasks go to the base model."""

from __future__ import annotations

import torch

from retain.continual.general import NONE, general_source, held_out, read_pool, split_pool
from retain.continual.measure import evaluate_routed
from retain.continual.registry import SwitchRouter, copy_adapters, load_feature_model, save_adapter
from retain.continual.switch import Switch, retained
from retain.continual.tasks import Task
from retain.distributed import on_main
from retain.methods.lora import attach_lora, lora_config
from retain.models import weights_fingerprint


def _open_previous(ctx, previous) -> tuple[object, dict[str, list[str]]]:
    """The base with the old registry's adapters (frozen, copied byte for byte) and its stored instructions."""
    from peft import PeftModel

    model = ctx.loaded.model
    if previous is None:
        return model, {}
    old, prev = previous.tasks, previous.path
    model = PeftModel.from_pretrained(model, str(prev / "adapters" / old[0].name), adapter_name=old[0].name)
    for t in old[1:]:
        model.load_adapter(str(prev / "adapters" / t.name), adapter_name=t.name)
    on_main(copy_adapters, prev, ctx.staging, [t.name for t in old])
    return model, dict(Switch.load(prev / "switch").stored)


def _with_new_adapter(ctx, model, task: Task):
    """A fresh LoRA adapter for ``task``, the only trainable weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        torch.manual_seed(ctx.cfg.seed)  # as attach_lora: a new adapter's initialisation depends on the seed only
        model.add_adapter(task.name, lora_config(ctx.cfg, ctx.is_seq2seq))
        model.set_adapter(task.name)
    else:
        model = attach_lora(model, ctx.cfg, ctx.is_seq2seq, adapter_name=task.name)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n and f".{task.name}." in n)
    return model


def train_adapter(ctx, model, task: Task):
    """A new LoRA adapter for ``task`` on the frozen base, its best weights kept, written to ``adapters/<task>/``
    (switchcit, and arrow, which routes among the same adapters)."""
    model = _with_new_adapter(ctx, model, task)
    ctx.train(model, task.name, "lora", ctx.rows(task), ctx.cfg.max_steps, select=[task])
    on_main(save_adapter, model, task.name, ctx.staging)
    return model


def _general_class(cfg, previous, stored: dict) -> tuple[dict | None, list[str]]:
    """The general class (its registry entry, or None) and held-out general inputs; its stored instructions go into
    ``stored[None]`` (kept from the registry being extended, else drawn from the pool)."""
    source = general_source(cfg, previous)
    if source == NONE:
        return None, []
    if None not in stored:
        stored[None] = split_pool(read_pool(source), cfg.general_size, cfg.seed)[0]
    return {"source": source, "stored": len(stored[None])}, held_out(source, stored[None], cfg.general_size, cfg.seed)


def run_switchcit(ctx, new: list[Task], max_new: dict, previous=None) -> dict:
    cfg = ctx.cfg
    old = previous.tasks if previous else []
    model, stored = _open_previous(ctx, previous)
    general, general_inputs = _general_class(cfg, previous, stored)
    features = load_feature_model(cfg.feature_model, model, ctx.tokenizer, ctx.is_seq2seq, max_length=cfg.switch_max_length,
                                  pooling=cfg.switch_pooling, layer=cfg.switch_layer,
                                  fingerprint=previous.info["feature_model"]["fingerprint"] if previous else None,
                                  trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    cache: dict[str, torch.Tensor] = {}

    def features_of(task: Task) -> torch.Tensor:  # the feature model is frozen: validation features are computed once
        if task.name not in cache:
            cache[task.name] = features([r["input"] for r in task.validation[: cfg.eval_samples]])
        return cache[task.name]

    out = {"stages": [], "evals": [], "routing": [], "switch_fit": [], "general": general}
    seen = [t for t in old if t.validation]
    switch = None
    for i, task in enumerate(new):
        model = train_adapter(ctx, model, task)
        if cfg.feature_model == "base":
            features.model = model  # adapters are switched off while reading features
        stored[task.name] = retained([r["input"] for r in task.train], cfg.retain_fraction, cfg.retain_min, cfg.seed)
        names = [t.name for t in old] + [t.name for t in new[: i + 1]]
        switch = Switch(names, {n: stored[n] for n in names + ([None] if general else [])}, hidden=cfg.switch_hidden,
                        info={"feature_model": cfg.feature_model}, general=general is not None)
        fit = switch.fit(features, epochs=cfg.switch_epochs, lr=cfg.switch_lr, batch_size=cfg.switch_batch_size, seed=cfg.seed)
        ctx.log({"event": "switch", "after": task.name, **fit})
        seen.append(task)
        if general_inputs and "__general__" not in cache:
            cache["__general__"] = features(general_inputs)
        upcoming = new[i + 1] if i + 1 < len(new) else None
        scores, route = ctx.measured(
            f"after-{task.name}", evaluate_routed, model, ctx.tokenizer, switch, features_of, seen, is_seq2seq=ctx.is_seq2seq,
            n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size, upcoming=upcoming,
            general=(general_inputs, cache["__general__"]) if general_inputs else None,
            of=[ctx.scored(seen + ([upcoming] if upcoming else []), max_new), general_inputs, weights_fingerprint(switch.net)])
        for key, value in (("stages", task.name), ("evals", scores), ("routing", route), ("switch_fit", fit)):
            out[key].append(value)
        ctx.after(task, scores, prefix=f"routing {route['accuracy']:.1f}%" + (
            f" (general inputs to the base {route['general_accuracy']:.1f}%)" if route["general_accuracy"] is not None else "") + ", ")
        ctx.measure_general(task.name, model, router=SwitchRouter(switch, features, model))
    on_main(switch.save, ctx.staging / "switch")
    out["features_fingerprint"] = features.fingerprint
    return out
