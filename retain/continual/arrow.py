"""Arrow (Ostapenko et al., 2024) over the SwitchCIT adapters: PEFT's gradient-free routing, called, not rewritten.

The same per-task LoRA adapters as ``switchcit`` are trained (``switchcit.train_adapter``); no switch is
trained. After each task, ``peft.tuners.lora.arrow.create_arrow_model`` loads the adapters learnt so far onto
a copy of the untouched base with an ``arrow_router`` (``ArrowConfig``: ``--arrow-top-k``,
``--arrow-temperature``): in every LoRA layer each token is sent to the top-k adapters by |token . prototype|,
the prototype being the adapter's top right singular vector, mixed by a softmax. Every task is evaluated with
that one model.

Arrow routes tokens, not instructions. Its routing accuracy here is the share of validation inputs whose
routing weight, averaged over the input's tokens and every Arrow layer, is largest on their own task's
adapter (``arrow_routes``; the weights are recomputed from the layers' own prototypes, top-k and temperature
by PEFT's rule, in a hook: a measurement, not the routing).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from retain.continual.measure import eval_items, evaluate_plain, routing_summary
from retain.continual.registry import copy_adapters
from retain.continual.switchcit import train_adapter
from retain.continual.tasks import Task
from retain.data import render
from retain.distributed import on_main
from retain.tokens import pad_right, prompt_ids

ROUTER = "arrow_router"  # the adapter name create_arrow_model gives the router


def arrow_model(base, adapter_dirs: list[str], *, top_k: int, temperature: float, seed: int):
    """PEFT's Arrow model: the adapters in ``adapter_dirs`` (expert i = ``task_i``) routed on ``base``."""
    from peft.tuners.lora.arrow import create_arrow_model
    from peft.tuners.lora.config import ArrowConfig

    config = ArrowConfig(top_k=min(top_k, len(adapter_dirs)), router_temperature=temperature, rng_seed=seed)
    model = create_arrow_model(base, [str(d) for d in adapter_dirs], config)
    return model.eval().requires_grad_(False)


def _arrow_layers(model) -> list:
    return [m.lora_arrow[ROUTER] for m in model.modules() if hasattr(m, "lora_arrow") and ROUTER in m.lora_arrow]


@torch.no_grad()
def arrow_routes(model, tokenizer, prompts: list[str], *, is_seq2seq: bool, max_length: int, batch_size: int = 16) -> list[int]:
    """For each prompt, the adapter (expert index) Arrow weights most over the prompt's tokens and all its layers
    (for an encoder-decoder model, the encoder's)."""
    weights: list[torch.Tensor] = []

    def catch(layer, args):  # PEFT's ArrowLoraLinearLayer.forward(x, ...): the coefficients it is about to use
        sim = (args[0].float() @ layer.prototypes.float().T).abs()
        top, idx = sim.topk(layer.top_k, dim=-1)
        weights.append(torch.softmax(torch.full_like(sim, float("-inf")).scatter(-1, idx, top) / layer.temperature, dim=-1))

    handles = [layer.register_forward_pre_hook(catch) for layer in _arrow_layers(model)]
    device = next(model.parameters()).device
    routed: list[int] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p, is_seq2seq=is_seq2seq)[-max_length:] for p in prompts[start:start + batch_size]]
            ids, mask = pad_right(rows, tokenizer.pad_token_id)
            enc = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            weights.clear()
            model.get_base_model().get_encoder()(**enc) if is_seq2seq else model(**enc)
            total = torch.stack(weights).sum(0) * mask.to(device)[..., None]
            routed += total.sum(1).argmax(-1).tolist()
    finally:
        for h in handles:
            h.remove()
    return routed


def run_arrow(ctx, tasks: list[Task], max_new: dict, previous=None) -> dict:
    cfg = ctx.cfg
    pristine = copy.deepcopy(ctx.loaded.model)  # create_arrow_model wraps a base that holds no adapter yet
    model = ctx.loaded.model
    out = {"stages": [], "evals": [], "routing": []}
    source = ctx.reuse.adapters if ctx.reuse else None  # --adapters-from: checked by continual.reuse.adapters_source
    for i, task in enumerate(tasks):
        if source:
            on_main(copy_adapters, Path(source["registry"]), ctx.staging, [task.name])  # byte for byte; no training
        else:
            model = train_adapter(ctx, model, task)
        seen = tasks[: i + 1]
        arrow = arrow_model(copy.deepcopy(pristine), [ctx.staging / "adapters" / t.name for t in seen],
                            top_k=cfg.arrow_top_k, temperature=cfg.arrow_temperature, seed=cfg.seed)
        scored = tasks[: i + 2]
        scores = ctx.measured(f"after-{task.name}", evaluate_plain, arrow, ctx.tokenizer, scored, is_seq2seq=ctx.is_seq2seq,
                              n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size, of=ctx.scored(scored, max_new))
        prompts, truth = [], []
        for t in seen:
            prompts += [render(t.template, r) for r in t.validation[: cfg.eval_samples]]
            truth += [t.name] * len(eval_items(t, cfg.eval_samples)[0])
        routed = ctx.measured(f"routes-after-{task.name}", arrow_routes, arrow, ctx.tokenizer, prompts, is_seq2seq=ctx.is_seq2seq,
                              max_length=ctx.max_length, batch_size=cfg.eval_batch_size, of=[prompts, ctx.max_length])
        names = [t.name for t in seen]
        route = routing_summary(truth, [names[k] for k in routed], names, names)
        for key, value in (("stages", task.name), ("evals", scores), ("routing", route)):
            out[key].append(value)
        ctx.after(task, scores, prefix=f"Arrow routing {route['accuracy']:.1f}%, ")
        ctx.measure_general(task.name, arrow)  # the deployed system: Arrow routes every token among the adapters
        del arrow
    return out
