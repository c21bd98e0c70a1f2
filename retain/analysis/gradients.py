"""The gradient analysis (the paper's Fig. 3): is the format learnt first?

At a training step, the gradient of the training loss on a batch of the real task is compared with the
gradient on the *same* batch with its outputs permuted among its examples (labels shuffled: the format is
intact, the input-output relation is gone). A cosine near 1 means the update mostly teaches the format;
the paper measures ~0.97 at step 0 falling to ~0.1 by step 400 on the last block of mT5-XXL.

Both gradients are those training uses: the engine's loss (``StageTrainer.compute_loss``) on batches
built by the stage's own collator (packing, soft prompt), with respect to the parameters the stage
trains, in eval mode (no dropout: the two batches differ only in their outputs). Groups: the Q, K and V
projections and the MLP of the last transformer block (its self-attention; the decoder's for an
encoder-decoder), the whole block, and every trained parameter (``overall``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import sem
from transformers import TrainerCallback

from retain.errors import RetainError

GROUPS = ("q", "k", "v", "mlp", "block", "overall")
LEAVES = {"q": ("q_proj", "q", "query", "wq"), "k": ("k_proj", "k", "key", "wk"), "v": ("v_proj", "v", "value", "wv"),
          "mlp": ("mlp", "DenseReluDense", "feed_forward", "ffn")}
FUSED_QKV = ("c_attn",)  # GPT-2: Q, K and V side by side along the output dimension of one Conv1D


def last_block(model) -> tuple[str, torch.nn.Module]:
    """The last transformer block: the last element of the outermost list of identical modules that hold
    weights (``model.layers``, ``transformer.h``, T5's ``decoder.block``, which comes after ``encoder.block``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lists = [(n, m) for n, m in base.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)
             and len({type(c) for c in m}) == 1 and any(True for _ in m[0].parameters())]
    outer = [(n, m) for n, m in lists if not any(n.startswith(o + ".") for o, _ in lists if o != n)]
    if not outer:
        raise RetainError(f"{type(base).__name__}: no list of transformer blocks found, cannot pick the last block")
    name, blocks = outer[-1]
    return f"{name}.{len(blocks) - 1}", blocks[-1]


def _thirds(module, which: int):
    """Slices of a fused QKV module's parameters for Q (0), K (1) or V (2): its output dimension in thirds."""
    out_dim = 0 if isinstance(module, torch.nn.Linear) else 1  # Conv1D (GPT-2) stores (in, out)
    pieces = []
    for p in module.parameters(recurse=False):
        dim = out_dim if p.dim() > 1 else 0
        size = p.shape[dim] // 3
        pieces.append((p, (dim, which * size, size)))
    return pieces


def module_groups(model) -> dict:
    """``{group: (names, [(parameter, slice or None)])}`` for q, k, v, mlp and block of the last block; slice
    ``(dim, start, length)`` cuts a fused QKV weight. An unknown layout is one error naming what was found."""
    block_name, block = last_block(model)
    found: dict = {}
    for name, m in block.named_modules():
        leaf = name.rpartition(".")[2]
        for g, leaves in LEAVES.items():
            if g not in found and leaf in leaves:
                found[g] = ([f"{block_name}.{name}"], [(p, None) for p in m.parameters()])
        if leaf in FUSED_QKV and not any(g in found for g in "qkv"):
            for i, g in enumerate("qkv"):
                found[g] = ([f"{block_name}.{name}[{g}]"], _thirds(m, i))
    missing = [g for g in LEAVES if g not in found]
    if missing:
        names = ", ".join(n for n, _ in block.named_modules() if n)
        raise RetainError(f"{block_name}: cannot find {', '.join(missing)} in the last block (modules: {names})")
    found["block"] = ([block_name], [(p, None) for p in block.parameters()])
    return found


def shuffled(examples: list[dict], perm) -> list[dict]:
    """The batch with its outputs permuted among its examples: example i gets the output of example perm[i]."""
    return [{**e, "output": examples[int(j)]["output"]} for e, j in zip(examples, perm)]


def probe_batches(examples: list[dict], tokenizer, fmt, max_length: int, *, batches: int, size: int, seed: int) -> list:
    """``batches`` fixed batches of ``size`` training examples (seeded), each as (real rows, shuffled rows, how many
    outputs the shuffle changed): the same examples tokenized as training does (``data.tokenize``), the second with
    a seeded permutation of outputs (for a classification task some examples keep their label: the count says)."""
    from retain.data import tokenize

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(examples), size=min(batches * size, len(examples)), replace=False)
    out = []
    for start in range(0, len(idx), size):
        chunk = [examples[int(i)] for i in idx[start:start + size]]
        if len(chunk) < 2:
            break  # one example has nothing to swap outputs with
        fake = shuffled(chunk, rng.permutation(len(chunk)))
        changed = sum(a["output"] != b["output"] for a, b in zip(chunk, fake))
        out.append((tokenize(chunk, tokenizer, fmt, max_length).rows, tokenize(fake, tokenizer, fmt, max_length).rows, changed))
    return out


def gradient(trainer, rows: list[dict]) -> dict[int, torch.Tensor]:
    """The gradient of the engine's training loss on ``rows`` for every trained parameter (by ``id``), in eval
    mode; the parameters' ``.grad`` are left as they were."""
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    try:
        inputs = trainer._prepare_inputs(trainer.data_collator(rows))
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, inputs)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        model.train(was)
    return {id(p): g for p, g in zip(params, grads) if g is not None}


def _piece(g: torch.Tensor, cut) -> torch.Tensor:
    return (g if cut is None else g.narrow(*cut)).flatten().double()


def cosine(a: dict, b: dict, pieces) -> float | None:
    """Cosine between two gradients restricted to ``pieces`` ([(parameter, slice or None)])."""
    dot = na = nb = 0.0
    for p, cut in pieces:
        if id(p) in a and id(p) in b:
            x, y = _piece(a[id(p)], cut), _piece(b[id(p)], cut)
            dot, na, nb = dot + float(x @ y), na + float(x @ x), nb + float(y @ y)
    return dot / float(np.sqrt(na * nb)) if na > 0 and nb > 0 else None


def cosines(trainer, batches: list[tuple], groups: dict) -> dict:
    """Per group: the cosine between real and shuffled gradients, mean over the probe batches ± SE, n batches."""
    every = [(p, None) for p in trainer.model.parameters() if p.requires_grad]
    per: dict[str, list[float]] = {g: [] for g in GROUPS}
    for real, fake, *_ in batches:
        a, b = gradient(trainer, real), gradient(trainer, fake)
        for g in GROUPS:
            c = cosine(a, b, every if g == "overall" else groups[g][1])
            if c is not None:
                per[g].append(c)
    return {g: {"cosine": float(np.mean(v)) if v else None, "se": float(sem(v)) if len(v) > 1 else None, "n": len(v)}
            for g, v in per.items()}


class GradientProbe(TrainerCallback):
    """Measures the cosines at the stage's step 0, every ``every`` steps and at its last step; ``record(point)``."""

    def __init__(self, trainer, batches, record, *, stage: str, steps: int, offset: int, every: int):
        self.trainer, self.batches, self.record = trainer, batches, record
        self.stage, self.steps, self.offset, self.every = stage, steps, offset, every
        self.groups = module_groups(trainer.model)
        self.done: set[int] = set()

    def _at(self, step: int) -> None:
        if step not in self.done:
            self.done.add(step)
            self.record({"step": self.offset + step, "stage": self.stage, "stage_step": step,
                         "cosine": cosines(self.trainer, self.batches, self.groups)})

    def on_train_begin(self, args, state, control, **kw):
        self._at(state.global_step)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.every == 0 or state.global_step == self.steps:
            self._at(state.global_step)
