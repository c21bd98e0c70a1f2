"""Work a continual run takes from an earlier one instead of doing it again, verified first.

**Adapters** (``--adapters-from REGISTRY``, for a method whose ``ContinualMethod.adapters_from`` is set: arrow).
Each task's LoRA adapter is copied byte for byte from a SwitchCIT registry instead of being trained. The registry
must pass its manifest, have the same base weights (sha256), hold every ``--tasks`` task by name with the same task
settings (``Task.spec``: path, metric, template, resolved max_new_tokens, constraint, source_prefix), and each
adapter must have been trained with this run's training options. Those are recorded per task in ``registry.json``
(``tasks[i]["training"]``: ``adapter_options``), not read from the registry's ``config``, which describes only the
run that wrote it last: ``--resume-from`` can add tasks with other options. ``adapter_options`` is every option
except those listed in ``NOT_ADAPTER`` (they do not touch a task's adapter: the switch, other methods' options, the
general suite, where the output goes), with the learning rate as it applied (``--lr`` or the method's default) and
the number of processes (a data-parallel launch changes the batches). A new option is compared unless listed.
A registry written before per-task records existed is read through its ``config`` when one run wrote it
(``resume_from`` null) and refused otherwise.

**Base scores** (``--base-scores RESULTS``). The base model's scores on the tasks (FWT's b_j, per-item units kept
in ``results.json`` ``transfer.base``) and on the general suite (``general.base``) are taken from an earlier
``retain continual`` run when what they depend on is the same: ``base_key`` (the base weights' and tokenizer's sha256, attention
kernel, decoding record, evaluation batch size; per task its settings and a sha256 of the validation rows scored;
the general suite's tasks as loaded (rows, templates, metrics, items), shots and seed). Every run records its
``base_key`` in ``results.json`` (``base_evaluation``), so any finished run can lend its base scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retain.errors import RetainError

NOT_ADAPTER = ("method", "tasks", "output", "model", "task_config", "max_new_tokens", "resume_from", "adapters_from",
               "base_scores", "resume", "overwrite", "save_every", "log_every", "trust_remote_code", "allow_pickle",
               "feature_model", "retain_fraction", "retain_min", "osf_rank", "switch_*", "arrow_*", "replay_*", "general_*")


@dataclass
class Reuse:
    """What a run takes from earlier ones: its own ``base_key``; the base scores (``{"tasks": {name: scores},
    "general": suite scores or None}``) and their file; the adapters' record for ``results.json``."""

    key: dict
    base: dict | None = None
    base_from: str | None = None
    adapters: dict | None = None


def _plain(x):
    return json.loads(json.dumps(x))


def _sha(x) -> str:
    return hashlib.sha256(json.dumps(x, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _differs(there: dict, here: dict, keys) -> str | None:
    """The first of ``keys`` whose values differ, as 'KEY (A there, B here)'."""
    def short(v):  # a sha256 by its first 12 digits, as the registry's messages name weights
        return v[:12] if isinstance(v, str) and len(v) == 64 else v

    for k in keys:
        a, b = there.get(k), here.get(k)
        if a != b:
            a, b = short(a), short(b)
            return f"{k} ({a!r} there, {b!r} here)" if len(repr(a)) + len(repr(b)) < 120 else k
    return None


# ------------------------------------------------------------------ adapters
def adapter_options(config: dict, world_size: int) -> dict:
    """The options that shape a task's adapter (everything but ``NOT_ADAPTER``), as JSON values."""
    from retain.continual.methods import get

    skip = {k for k in NOT_ADAPTER if not k.endswith("*")}
    prefixes = tuple(k[:-1] for k in NOT_ADAPTER if k.endswith("*"))
    out = {k: v for k, v in config.items() if k not in skip and not k.startswith(prefixes)}
    out["lr"] = config.get("lr") or get(config["method"]).default_lr
    out["world_size"] = world_size
    return _plain(out)


def task_training(path: Path, info: dict) -> dict:
    """{task: the options its adapter was trained with, or None if unknown} of a registry."""
    fallback = None
    if info.get("config") and not info["config"].get("resume_from"):  # written by one run: its config is every task's
        res = Path(path) / "results.json"
        world_size = json.loads(res.read_text()).get("world_size", 1) if res.is_file() else 1
        fallback = adapter_options(info["config"], world_size)
    return {t["name"]: t.get("training") or fallback for t in info["tasks"]}


def check_adapters_flag(cfg, method) -> None:
    """Before anything loads: ``--adapters-from`` applies to this method and names a complete registry."""
    if not cfg.adapters_from:
        return
    if not method.adapters_from:
        from retain.continual.methods import get, names

        able = ", ".join(n for n in names() if get(n).adapters_from)
        raise RetainError(f"--adapters-from takes each task's LoRA adapter from a SwitchCIT registry instead of training it; "
                          f"it applies to --method {able}, not {cfg.method}")
    if cfg.resume_from:
        raise RetainError("--adapters-from and --resume-from: give one")
    from retain.artifacts import verify_manifest
    from retain.continual.registry import read_info

    read_info(Path(cfg.adapters_from), flag="--adapters-from")
    verify_manifest(Path(cfg.adapters_from))


def adapters_source(cfg, tasks: list, fingerprint: str, world_size: int) -> dict:
    """Check the registry of ``--adapters-from`` against this run (after the base is loaded and every task's
    max_new_tokens resolved); returns what ``results.json`` records about it."""
    from retain.artifacts import verify_manifest
    from retain.config import to_dict
    from retain.continual.registry import read_info

    path = Path(cfg.adapters_from)
    where = f"--adapters-from {path}"
    info, files = read_info(path, flag="--adapters-from"), verify_manifest(path)["files"]
    if info["base"]["fingerprint"] != fingerprint:
        raise RetainError(f"{where}: its adapters were trained on base weights sha256 {info['base']['fingerprint'][:12]}, "
                          f"this run's base '{cfg.model}' has {fingerprint[:12]}")
    specs, trained = {t["name"]: t for t in info["tasks"]}, task_training(path, info)
    here = adapter_options(to_dict(cfg), world_size)
    for task in tasks:
        if task.name not in specs:
            raise RetainError(f"{where}: holds no adapter for task '{task.name}' (it holds {', '.join(specs)})")
        spec = {k: specs[task.name].get(k) for k in task.spec()}
        diff = _differs(spec, task.spec(), task.spec())
        if diff:
            raise RetainError(f"{where}: task '{task.name}' was learnt with other task settings: {diff}")
        if trained[task.name] is None:
            raise RetainError(f"{where}: the registry does not record the options task '{task.name}' was trained with "
                              "(extended with --resume-from before such records were kept); train the adapters instead")
        diff = _differs(trained[task.name], here, sorted(trained[task.name].keys() | here.keys()))
        if diff:
            raise RetainError(f"{where}: task '{task.name}''s adapter was trained with other options: {diff}; "
                              "drop --adapters-from to train it, or run with the registry's options")
    names = [t.name for t in tasks]
    training = []
    if (path / "results.json").is_file():
        training = [r for r in json.loads((path / "results.json").read_text()).get("training", []) if r.get("stage") in names]
    return {"registry": str(path), "adapters": {n: files.get(f"adapters/{n}/adapter_model.safetensors") for n in names},
            "training": training}


# ------------------------------------------------------------------ base scores
def base_key(cfg, fingerprint: str, tasks: list, tokenizer) -> dict:
    """What the base model's scores depend on (tasks' max_new_tokens resolved)."""
    from retain.continual.general import load_general_suite
    from retain.evaluation.decoding import current
    from retain.tokens import tokenizer_fingerprint

    general = load_general_suite(cfg)
    return _plain({
        "fingerprint": fingerprint, "tokenizer": tokenizer_fingerprint(tokenizer), "attn_implementation": cfg.attn_implementation, "decoding": current().record(),
        "eval_batch_size": cfg.eval_batch_size,
        "tasks": {t.name: {**{k: v for k, v in t.spec().items() if k not in ("name", "path")}, "eval_samples": cfg.eval_samples,
                           "validation": _sha(t.validation[: cfg.eval_samples])} for t in tasks},
        "general": None if general is None else {
            "shots": cfg.general_shots, "seed": cfg.seed, "examples": cfg.general_examples,
            "tasks": _sha([{k: v for k, v in asdict(t).items() if k != "source"} for t in general])},
    })


def read_results(spec: str) -> tuple[Path, dict]:
    """A ``retain continual`` results.json (or the run folder holding one), its folder's manifest verified if it has one."""
    from retain.artifacts import MANIFEST, verify_manifest

    path = Path(spec)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise RetainError(f"--base-scores: no such file: {path} (give a 'retain continual' run folder or its results.json)")
    if (path.parent / MANIFEST).is_file():
        verify_manifest(path.parent)
    try:
        res = json.loads(path.read_text())
    except ValueError as e:
        raise RetainError(f"--base-scores {path}: malformed JSON ({e})") from None
    if not isinstance(res, dict) or "base_evaluation" not in res:
        raise RetainError(f"--base-scores {path}: records no base evaluation (not a 'retain continual' results.json, "
                          "or one written before base scores could be reused)")
    return path, res


def reused_base(spec: str, key: dict) -> dict:
    """The base scores of ``--base-scores`` for this run's ``key``: {"tasks": {name: scores}, "general": ...};
    one RetainError line naming what differs."""
    path, res = read_results(spec)
    there, where = res["base_evaluation"]["key"], f"--base-scores {path}"
    diff = _differs(there, key, ("fingerprint", "tokenizer", "attn_implementation", "decoding", "eval_batch_size"))
    if diff:
        raise RetainError(f"{where}: its base model was scored with other settings: {diff}")
    by_name = dict(zip(res["tasks"], res["transfer"]["base"]))
    for name, want in key["tasks"].items():
        if name not in there["tasks"] or not by_name.get(name):
            raise RetainError(f"{where}: holds no base scores for task '{name}' (it has {', '.join(there['tasks']) or 'none'})")
        diff = _differs(there["tasks"][name], want, sorted(want))
        if diff:
            raise RetainError(f"{where}: task '{name}' was scored with other settings or data: {diff}")
    general = None
    if key["general"] is not None:
        diff = _differs(there["general"] or {}, key["general"], sorted(key["general"]))
        if there["general"] is None or not (res.get("general") or {}).get("base"):
            diff = "it scored no general suite"
        if diff:
            raise RetainError(f"{where}: its general suite differs: {diff}")
        general = res["general"]["base"]
    return {"tasks": {name: by_name[name] for name in key["tasks"]}, "general": general}
