"""The switch: which task does an instruction belong to?

Features are hidden states of a feature model (the base model with its adapters
switched off by default; any model spec otherwise; for encoder-decoder models,
the encoder's) over the first ``max_length`` tokens of the input as the model
sees it (with the tokenizer's special tokens; only the input's own tokens are
pooled, not a BOS/EOS that every input shares), read at the
output of block ``layer`` (``"middle"`` by default: the forward stops there, so
it costs half a forward; ``"last"``: after the final norm, the paper's choice)
and pooled by their ``mean`` (default) or the ``last`` token's (the paper's).
Measured choices are in docs/CONTINUAL.md (bench/switch_features.py). A small classifier,
Linear(d, 200) - ReLU - Linear(200, n_tasks), is trained with AdamW (1e-3) for
20 epochs on the *stored* instructions only: a retention fraction of each
task's training inputs, at least a minimum count. Nothing else of old tasks is
kept.

The *general* class (``general=True``): instructions that belong to none of the
tasks, learnt from stored general instructions (``retain.continual.general``), are
routed to ``None``: the base model with no adapter. A switch without it (the
paper's, and every registry written before it existed) routes every input to a task.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path

import torch

from retain.artifacts import write_json
from retain.continual.config import SWITCH_POOLING
from retain.errors import RetainError
from retain.tokens import pad_right, prompt_ids, special_affixes, text_ids

SWITCH_WEIGHTS = "switch.safetensors"
SWITCH_INFO = "switch.json"
STORED = "instructions.jsonl"


def retained(inputs: list[str], fraction: float, minimum: int, seed: int) -> list[str]:
    """The stored sample of a task's instructions: max(ceil(fraction*n), minimum), at most n."""
    k = min(len(inputs), max(math.ceil(fraction * len(inputs)), minimum))
    return random.Random(seed).sample(inputs, k)


class _Stop(Exception):
    """Raised by a forward hook once the layer the switch reads has run: the layers above are never computed."""


def layer_stack(module: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks: the first ModuleList holding ``n_layers`` modules."""
    return next((m for m in module.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers), None)


class FeatureModel:
    """Pooled hidden states of a (frozen) model over the first ``max_length`` tokens.

    ``layer``: ``"middle"`` (block ``n_layers // 2``; the forward stops there), ``"last"`` (the final hidden
    state after the model's last norm, the paper's choice) or a block number ``1..n_layers``.
    """

    def __init__(self, model, tokenizer, is_seq2seq: bool, max_length: int = 16, batch_size: int = 16,
                 pooling: str = "mean", layer: str | int = "middle"):
        if pooling not in SWITCH_POOLING:
            raise ValueError(f"unknown switch pooling {pooling!r}: choose one of {SWITCH_POOLING}")
        self.model, self.tokenizer, self.is_seq2seq = model, tokenizer, is_seq2seq
        self.max_length, self.batch_size, self.pooling = max_length, batch_size, pooling
        self.layer = str(layer)
        self.fingerprint: str | None = None  # of a separate feature model; None for the base model
        self._block(self._network())  # a bad --switch-layer fails here, before any training

    def _network(self):
        """The module the features come from: the encoder of an encoder-decoder model, else the model."""
        if not self.is_seq2seq:
            return self.model
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.get_encoder()

    def _block(self, network) -> torch.nn.Module | None:
        """The block whose output is read (None: the final hidden state)."""
        if self.layer == "last":
            return None
        cfg = (self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model).config
        n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None)
        stack = layer_stack(network, n) if n else None
        if stack is None:
            raise RetainError(f"--switch-layer {self.layer!r}: cannot find the feature model's {n or '?'} transformer blocks; "
                              "use --switch-layer last")
        if self.layer == "middle":
            k = max(1, n // 2)
        elif self.layer.isdigit() and 1 <= int(self.layer) <= n:
            k = int(self.layer)
        else:
            raise RetainError(f"--switch-layer {self.layer!r}: choose 'middle', 'last' or a block number 1..{n}")
        return stack[k - 1]

    def _hidden(self, network, block, enc: dict) -> torch.Tensor:
        if block is None:  # the final hidden state
            if self.is_seq2seq:
                return network(**enc).last_hidden_state
            return self.model(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        caught = {}

        def stop(module, args, output):
            caught["hidden"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = block.register_forward_hook(stop)
        try:
            network(**enc) if self.is_seq2seq else self.model(**enc, logits_to_keep=1)
        except _Stop:
            pass
        finally:
            handle.remove()
        return caught["hidden"]

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        model = self.model
        ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        head = len(special_affixes(self.tokenizer)[0])
        out = []
        try:
            with ctx:
                network = self._network()
                block = self._block(network)
                for start in range(0, len(texts), self.batch_size):
                    # the start of each input, as the model sees it (leading special tokens included), whatever
                    # the tokenizer's truncation side; pooled over the input's own tokens only
                    rows, spans = [], []
                    for t in texts[start:start + self.batch_size]:
                        ids = prompt_ids(self.tokenizer, t, is_seq2seq=self.is_seq2seq)[:self.max_length]
                        text_end = min(len(ids), head + len(text_ids(self.tokenizer, t)))
                        rows.append(ids or [self.tokenizer.eos_token_id])
                        spans.append((head, text_end) if text_end > head else (0, len(rows[-1])))
                    ids, mask = pad_right(rows, self.tokenizer.pad_token_id)
                    enc = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
                    hidden = self._hidden(network, block, enc)
                    pool = torch.zeros_like(mask, dtype=torch.float32)
                    for r, (a, b) in enumerate(spans):
                        pool[r, a:b] = 1.0
                    pool = pool.to(device)
                    if self.pooling == "mean":
                        pooled = (hidden.float() * pool[..., None]).sum(1) / pool.sum(1, keepdim=True).clamp(min=1)
                    else:  # the input's last token
                        last = torch.tensor([b - 1 for _, b in spans], device=device)
                        pooled = hidden[torch.arange(hidden.shape[0], device=device), last].float()
                    out.append(pooled.cpu())
        finally:
            model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)


def classifier(dim: int, hidden: int, n_tasks: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_tasks))


class Switch:
    """Routes inputs to task names (or ``None``, the general class: the base model); retrained from the stored
    instructions after each task. ``stored[None]``: the general instructions, when ``general``."""

    def __init__(self, tasks: list[str], stored: dict, net: torch.nn.Module | None = None, *,
                 hidden: int = 200, info: dict | None = None, general: bool = False):
        self.tasks, self.stored, self.net, self.hidden = list(tasks), stored, net, hidden
        self.general = general
        self.info = dict(info or {})

    @property
    def labels(self) -> list[str | None]:
        """What the switch routes to: the task names, then ``None`` (the base model) if it has a general class."""
        return self.tasks + ([None] if self.general else [])

    def fit(self, features: FeatureModel, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 32, seed: int = 0) -> dict:
        texts = [t for name in self.labels for t in self.stored[name]]
        labels = torch.tensor([i for i, name in enumerate(self.labels) for _ in self.stored[name]])
        x = features(texts)
        torch.manual_seed(seed)
        self.net = classifier(x.shape[1], self.hidden, len(self.labels))
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        # classes weighted by the inverse of their counts (all 1 when every class stores as many instructions):
        # the general class stores more instructions than a task, and must not win by its size alone
        counts = torch.bincount(labels, minlength=len(self.labels)).float()
        weight = counts.sum() / (len(self.labels) * counts.clamp(min=1))
        self.net.train()
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            for idx in torch.randperm(len(labels), generator=gen).split(batch_size):
                loss = torch.nn.functional.cross_entropy(self.net(x[idx]), labels[idx], weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        with torch.no_grad():
            train_acc = (self.net(x).argmax(1) == labels).float().mean().item() * 100
        self.info.update({"dim": x.shape[1], "hidden": self.hidden, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                          "stored": {n: len(self.stored[n]) for n in self.tasks},
                          "stored_general": len(self.stored[None]) if self.general else None})
        return {"final_loss": round(loss.item(), 6), "train_accuracy": round(train_acc, 2), "examples": len(labels)}

    @torch.no_grad()
    def route_features(self, x: torch.Tensor) -> list[str | None]:
        return [self.labels[i] for i in self.net(x).argmax(1).tolist()]

    def route(self, features: FeatureModel, texts: list[str]) -> list[str | None]:
        return self.route_features(features(texts))

    # ------------------------------------------------------------- files
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / SWITCH_WEIGHTS))
        write_json(folder / SWITCH_INFO, {**self.info, "tasks": self.tasks, "hidden": self.hidden, "general": self.general})
        with open(folder / STORED, "w") as f:
            for name in self.labels:  # general instructions: "task": null
                for text in self.stored[name]:
                    f.write(json.dumps({"task": name, "input": text}) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Switch:
        from safetensors.torch import load_file

        info = json.loads((folder / SWITCH_INFO).read_text())
        general = bool(info.get("general"))  # absent: a switch written before the general class existed
        stored: dict = {n: [] for n in info["tasks"] + ([None] if general else [])}
        for i, line in enumerate((folder / STORED).read_text().splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if row.get("task") not in stored:
                    raise RetainError(f"{folder / STORED}:{i}: task {row.get('task')!r} is not one the switch routes to")
                stored[row["task"]].append(row["input"])
        state = load_file(str(folder / SWITCH_WEIGHTS))
        net = classifier(info["dim"], info["hidden"], len(stored))
        net.load_state_dict(state)
        net.eval()
        return cls(info["tasks"], stored, net, hidden=info["hidden"], info=info, general=general)
