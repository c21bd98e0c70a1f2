"""Post-hoc baselines: a model edited from the base and one full fine-tuning run, no training.

* **WiSE-FT** (Wortsman et al., 2022): ``theta = base + a (tuned - base)``, i.e. ``(1 - a) base + a tuned``;
  named ``wise-ft-A``.
* **LiNeS** (Wang et al., 2024): the update of layer ``l`` of ``L`` is scaled by ``alpha + beta (l - 1) / (L - 1)``:
  shallow layers keep less of the fine-tuning update, the deepest ``alpha + beta`` of it; named ``lines-A-B``.
  The layers are the model's repeated blocks (``model.layers.N``, ``transformer.h.N``, ``encoder.block.N``...),
  numbered in the order the model runs them (an encoder's blocks, then its decoder's); a weight outside the
  blocks takes the layer of the block before it (the embeddings, before any, the first; the final norm and the
  head, the last). A tied embedding and head is one tensor, scaled as the embedding.

``retain compare --methods wise-ft,lines`` evaluates them from its ``full`` run.
"""

from __future__ import annotations

import re

KINDS = ("wise-ft", "lines")


def names(kind: str, alphas: list[float], beta: float | None = None) -> list[str]:
    """The evaluated names of a post-hoc baseline: one per weight (LiNeS: ``beta`` None is ``1 - alpha``, the paper's
    single-task setting, where the deepest layer keeps its whole update)."""
    if kind == "wise-ft":
        return [f"wise-ft-{a:g}" for a in alphas]
    return [f"lines-{a:g}-{(1.0 - a if beta is None else beta):g}" for a in alphas]


def is_posthoc(name: str) -> bool:
    return name.startswith(tuple(f"{k}-" for k in KINDS))


def posthoc_model(name: str, base_model, tuned_model):
    """The model a post-hoc name (``wise-ft-A``, ``lines-A-B``) stands for."""
    if name.startswith("wise-ft-"):
        return interpolate(base_model, tuned_model, float(name[len("wise-ft-"):]))
    number = r"(\d*\.?\d+(?:e[+-]?\d+)?)"
    alpha, beta = (float(x) for x in re.fullmatch(f"lines-{number}-{number}", name).groups())
    return layer_scaled(base_model, tuned_model, alpha, beta)


def interpolate(base_model, tuned_model, alpha: float):
    """WiSE-FT: a copy of the model with weights (1 - alpha) * base + alpha * tuned."""
    return _scaled(base_model, tuned_model, lambda name: alpha)


def layer_scaled(base_model, tuned_model, alpha: float, beta: float):
    """LiNeS: a copy of the model with each weight ``base + (alpha + beta * depth) * (tuned - base)``, ``depth`` =
    ``(l - 1) / (L - 1)`` of its layer (``layer_depths``)."""
    depth = layer_depths(base_model)
    return _scaled(base_model, tuned_model, lambda name: alpha + beta * depth[name])


def layer_depths(model) -> dict[str, float]:
    """Every state-dict entry's layer as ``(l - 1) / (L - 1)`` in [0, 1] (see the module docstring)."""
    keys = list(model.state_dict())
    block = {}  # name -> (stack, index) of the block it is in
    for name in keys:
        m = re.match(r"(.*?)\.(\d+)\.", name)
        if m:
            block[name] = (m.group(1), int(m.group(2)))
    layers = list(dict.fromkeys(block.values()))  # the blocks in the order the model holds them
    order = {b: i for i, b in enumerate(layers)}
    last = max(len(layers) - 1, 1)
    depths, current = {}, 0
    for name in keys:
        if name in block:
            current = order[block[name]]
        depths[name] = current / last
    return depths


def _scaled(base_model, tuned_model, scale):
    """A copy of the base with each floating weight moved ``scale(name)`` of the way to the tuned one."""
    import copy

    import torch

    tuned_state = tuned_model.state_dict()
    model = copy.deepcopy(base_model)
    done: set[int] = set()  # tied weights (embeddings = LM head) are one tensor under two names: move it once
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in tuned_state and p.dtype.is_floating_point and p.data_ptr() not in done:
                done.add(p.data_ptr())
                p.copy_(torch.lerp(p, tuned_state[name].to(p.dtype), float(scale(name))))
    return model.eval()
