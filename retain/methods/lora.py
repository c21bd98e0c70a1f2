"""LoRA adapters with PEFT."""

from __future__ import annotations


def lora_config(cfg, is_seq2seq: bool):
    from peft import LoraConfig, TaskType

    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=target, base_model_name_or_path=cfg.model,
    )


def attach_lora(model, cfg, is_seq2seq: bool, adapter_name: str = "default"):
    import torch
    from peft import get_peft_model

    torch.manual_seed(cfg.seed)  # the adapter's initial A matrices depend on the seed only
    peft_model = get_peft_model(model, lora_config(cfg, is_seq2seq), adapter_name=adapter_name)
    peft_model.peft_config[adapter_name].base_model_name_or_path = cfg.model
    return peft_model


def lora_parameters(model) -> list:
    """The LoRA weights of a PEFT LoRA model (every adapter), [] for any other model."""
    from peft.tuners.lora import LoraModel

    inner = getattr(model, "base_model", None)
    if not isinstance(inner, LoraModel):
        return []
    return [p for n, p in inner.named_parameters() if inner.prefix in n]


def plain_state(state: dict) -> dict:
    """A state of a model with LoRA layers injected, as the plain model's: the LoRA weights dropped, each wrapped
    layer's weights under their own names again (``q_proj.base_layer.weight`` -> ``q_proj.weight``)."""
    return {n.replace(".base_layer.", "."): t for n, t in state.items() if ".lora_" not in n}


def without_adapters(model):
    """The base model under a PEFT LoRA model, with its adapters disabled: a view that shares every weight.
    promot-lora's tuned weights without the LoRA, for the tasks other than the tuned one (PEFT's
    ``disable_adapter()`` gives exactly the base model's outputs)."""
    return _AdaptersOff(model)


class _AdaptersOff:
    """Calls and ``generate`` run with the adapters disabled; every other attribute is the base model's."""

    def __init__(self, peft_model):
        self.__dict__["_peft"] = peft_model

    def __call__(self, *args, **kwargs):
        with self._peft.disable_adapter():
            return self._peft.get_base_model()(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with self._peft.disable_adapter():
            return self._peft.get_base_model().generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._peft.get_base_model(), name)
