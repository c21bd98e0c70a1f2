"""Run directories: written atomically, verified when loaded.

Layout of ``--output DIR``::

    model/          full weights (safetensors) + tokenizer, when the method changes them
    prompt/         PEFT prompt-tuning adapter   (PeftModel.from_pretrained(model, DIR/prompt))
    lora/           PEFT LoRA adapter (no copy of the base); with model/ (promot-lora) it is, like a
                    prompt, used for the tuned task only (run.json "removable")
    run.json        method, full config, stages, every evaluation, versions, wall time
    train_log.jsonl losses and evaluations as they happened
    manifest.json   sha256 of every file above; checked by load_run

While training, everything lives in a hidden sibling ``.DIR.partial`` (with
resumable checkpoints); it is renamed to DIR only once complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from retain.artifacts import RUN_FILE, verify_manifest
from retain.data import TaskFormat
from retain.errors import RetainError


# --------------------------------------------------------------------- load
@dataclass
class Run:
    """A trained run: the tuned model with and without its removable part (a soft prompt; promot-lora's LoRA)."""

    path: Path
    info: dict
    model: object  # tuned model, no prompt (a PeftModel for LoRA runs)
    tokenizer: object
    format: TaskFormat
    is_seq2seq: bool
    prompted: object | None = None  # tuned model with its removable part attached (the soft prompt or promot-lora's LoRA)
    extras: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.info["method"]

    @property
    def has_prompt(self) -> bool:
        return self.prompted is not None

    def model_for(self, use_prompt: bool):
        return self.prompted if (use_prompt and self.prompted is not None) else self.model

    def generate(self, texts: list[str], *, use_prompt: bool = True, raw: bool = False, max_new_tokens: int | None = None,
                 first_line: bool = True) -> list[str]:
        """Outputs for inputs: templated (unless raw), one-shot prefix and prompt for the tuned task."""
        from retain.evaluation.decoding import generate_texts

        tuned = use_prompt or not self.has_prompt
        prompts = texts if raw else [self.format.prompt({"input": t}, with_shot=tuned) for t in texts]
        return generate_texts(self.model_for(use_prompt), self.tokenizer, prompts, is_seq2seq=self.is_seq2seq,
                              max_new_tokens=max_new_tokens or self.info.get("max_new_tokens", 32), first_line=first_line)


def read_run_info(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise RetainError(f"--run: no such directory: {path}")
    if not (path / RUN_FILE).is_file():
        raise RetainError(f"--run: {path} is not a retain run (no {RUN_FILE})")
    try:
        return json.loads((path / RUN_FILE).read_text())
    except ValueError as e:
        raise RetainError(f"{path / RUN_FILE}: malformed JSON ({e})") from None


def load_run(path, *, verify: bool = True) -> Run:
    """Load a run directory written by ``retain train``."""
    from peft import PeftModel

    from retain.models import load_model, model_options

    path = Path(path)
    info = read_run_info(path)
    if verify:
        verify_manifest(path)
    base = info["base"]
    if (path / "model").is_dir():
        loaded = load_model(str(path / "model"), **{**model_options(info["config"]), "trust_remote_code": False, "allow_pickle": False})
    else:
        loaded = load_model(base["spec"], **model_options(info["config"]))
        if loaded.fingerprint != base["fingerprint"]:
            raise RetainError(
                f"{path}: trained on base '{base['spec']}' with weights sha256 {base['fingerprint'][:12]}, "
                f"but that spec now loads weights {loaded.fingerprint[:12]}; the run does not match this base model"
            )
    model = loaded.model
    prompted = None
    if (path / "lora").is_dir():
        model = PeftModel.from_pretrained(model, str(path / "lora"))
        if "lora" in info.get("removable", ()):  # promot-lora: the LoRA for the tuned task, the weights alone for others
            from retain.methods.lora import without_adapters

            model, prompted = without_adapters(model), model
            prompted.eval()
    model.eval()
    if (path / "prompt").is_dir():
        prompted = PeftModel.from_pretrained(model, str(path / "prompt"))
        prompted.eval()
    fmt = TaskFormat(**info["format"], is_seq2seq=loaded.is_seq2seq)
    return Run(path, info, model, loaded.tokenizer, fmt, loaded.is_seq2seq, prompted)
