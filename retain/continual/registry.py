"""A SwitchCIT registry: one frozen base, one LoRA adapter per task, a switch.

Layout of a ``retain continual --method switchcit --output DIR``::

    registry.json        base model spec + sha256 of its weights, feature model, tasks (name, metric, template),
                         general class (its source and how many instructions were stored; null: none)
    adapters/<task>/     PEFT LoRA adapter of each task (adapter_config.json, adapter_model.safetensors)
    switch/              switch.safetensors, switch.json, instructions.jsonl (the stored instructions; general
                         ones with "task": null)
    results.json, results.md, R.png, average.png, train_log.jsonl
    manifest.json        sha256 of every file; verified on load

``load_registry`` refuses a base model whose weights differ from the recorded
hash, and any file that differs from the manifest. A registry written before the
general class existed loads as it was: its switch routes every input to a task.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from retain.errors import RetainError

REGISTRY_FILE = "registry.json"
KIND = "switchcit-registry"


def save_adapter(model, task: str, root: Path) -> Path:
    """Write one adapter of a PeftModel to ``root/adapters/<task>/``."""
    tmp = root / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=[task])
    dest = root / "adapters" / task
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    (tmp / task).rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def copy_adapters(src: Path, dest: Path, tasks: list[str]) -> None:
    """Old adapters go into a new registry byte for byte (never re-serialised)."""
    for task in tasks:
        shutil.copytree(src / "adapters" / task, dest / "adapters" / task, dirs_exist_ok=True)  # (again, on --resume)


def read_info(path: Path, flag: str = "--registry") -> dict:
    path = Path(path)
    if not path.is_dir():
        raise RetainError(f"{flag}: no such directory: {path}")
    f = path / REGISTRY_FILE
    if not f.is_file():
        raise RetainError(f"{flag}: {path} is not a SwitchCIT registry (no {REGISTRY_FILE})")
    try:
        info = json.loads(f.read_text())
    except ValueError as e:
        raise RetainError(f"{f}: malformed JSON ({e})") from None
    if info.get("kind") != KIND:
        raise RetainError(f"{f}: not a SwitchCIT registry (kind {info.get('kind')!r})")
    return info


def check_base(info: dict, loaded, path: Path) -> None:
    want = info["base"]["fingerprint"]
    if loaded.fingerprint != want:
        raise RetainError(
            f"{path}: registry adapters were trained on base '{info['base']['spec']}' (weights sha256 {want[:12]}), "
            f"but base '{loaded.spec}' has weights sha256 {loaded.fingerprint[:12]}; refusing to load adapters on a different base model"
        )


def load_feature_model(spec: str, peft_model, tokenizer, is_seq2seq: bool, *, fingerprint: str | None = None,
                       max_length: int = 16, pooling: str = "mean", layer: str = "middle", trust_remote_code: bool = False,
                       allow_pickle: bool = False):
    from retain.continual.switch import FeatureModel
    from retain.models import load_model

    if spec == "base":
        return FeatureModel(peft_model, tokenizer, is_seq2seq, max_length, pooling=pooling, layer=layer)
    loaded = load_model(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if fingerprint and loaded.fingerprint != fingerprint:
        raise RetainError(f"feature model '{spec}' now loads weights sha256 {loaded.fingerprint[:12]}, "
                          f"but the switch was trained on {fingerprint[:12]}")
    loaded.model.eval().requires_grad_(False)
    features = FeatureModel(loaded.model, loaded.tokenizer, loaded.is_seq2seq, max_length, pooling=pooling,
                            layer=layer)
    features.fingerprint = loaded.fingerprint
    return features


class SwitchRouter:
    """A switch and its adapters as one deployed system, the ``router`` of ``harness.evaluate_suite``: ``route``
    names each prompt's adapter (``None``: the general class), ``active(name)`` makes ``model`` answer with it
    (``None``: every adapter disabled, the base model)."""

    def __init__(self, switch, features, model):
        self.switch, self.features, self.model = switch, features, model

    def route(self, texts: list[str]) -> list[str | None]:
        return self.switch.route(self.features, texts)

    @contextlib.contextmanager
    def active(self, name: str | None):
        if name is None:
            with self.model.disable_adapter():
                yield
            return
        before = self.model.active_adapter
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(before)


@dataclass
class Registry:
    path: Path
    info: dict
    model: object  # PeftModel holding every task's adapter
    tokenizer: object
    is_seq2seq: bool
    switch: object
    features: object

    @property
    def tasks(self) -> list[dict]:
        return self.info["tasks"]

    def task(self, name: str) -> dict:
        return next(t for t in self.tasks if t["name"] == name)

    @property
    def general(self) -> dict | None:
        """The general class ({"source", "stored"}), or None (every input goes to a task)."""
        return self.info.get("general")

    def route(self, texts: list[str]) -> list[str | None]:
        """Each input's task (its adapter), or None: the general class, answered by the base model."""
        return self.switch.route(self.features, texts)

    def router(self) -> SwitchRouter:
        return SwitchRouter(self.switch, self.features, self.model)

    def prompts(self, texts: list[str], names: list[str | None]) -> list[str]:
        from retain.data import render

        return [render(self.task(n)["template"], {"input": t}) if n is not None else t for t, n in zip(texts, names)]

    def generate(self, texts: list[str], *, names: list[str | None] | None = None, max_new_tokens: int | None = None,
                 first_line: bool = True, batch_size: int = 16) -> tuple[list[str | None], list[str]]:
        """Route each input (unless ``names`` are given) and generate, mixed tasks in one pass per batch; returns
        (the adapter that answered each input, None for the base model; the outputs)."""
        from retain.continual.generation import generate_routed

        names = list(names) if names is not None else self.route(texts)
        base_limit = max([t.get("max_new_tokens") or 32 for t in self.tasks])  # a general input: the longest task budget
        limits = [max_new_tokens or (self.task(n).get("max_new_tokens") or 32 if n is not None else base_limit) for n in names]
        outs = generate_routed(self.model, self.tokenizer, self.prompts(texts, names), names, is_seq2seq=self.is_seq2seq,
                               max_new_tokens=limits, batch_size=batch_size, first_line=first_line)
        return names, outs


def load_registry(path, *, base: str | None = None, verify: bool = True) -> Registry:
    """Load a registry; ``base`` overrides the recorded base model spec (its weights must match)."""
    from peft import PeftModel

    from retain.artifacts import verify_manifest
    from retain.continual.switch import Switch
    from retain.models import load_model, model_options

    path = Path(path)
    info = read_info(path)
    if verify:
        verify_manifest(path)
    cfg = info.get("config", {})
    loaded = load_model(base or info["base"]["spec"], **model_options(cfg))
    check_base(info, loaded, path)
    names = [t["name"] for t in info["tasks"]]
    model = PeftModel.from_pretrained(loaded.model, str(path / "adapters" / names[0]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(path / "adapters" / name), adapter_name=name)
    model.eval().requires_grad_(False)
    fm = info["feature_model"]
    features = load_feature_model(fm["spec"], model, loaded.tokenizer, loaded.is_seq2seq, fingerprint=fm.get("fingerprint"),
                                  # registries written before these options existed: 256 tokens, last token, final layer
                                  max_length=cfg.get("switch_max_length", 256), pooling=cfg.get("switch_pooling", "last"),
                                  layer=cfg.get("switch_layer", "last"))
    switch = Switch.load(path / "switch")
    if switch.tasks != names:
        raise RetainError(f"{path}: the switch routes to {switch.tasks} but the registry holds adapters {names}")
    return Registry(path, info, model, loaded.tokenizer, loaded.is_seq2seq, switch, features)
