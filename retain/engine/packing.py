"""Padding-free batches: several examples in one row with restarting position ids, used only where a
once-per-model check shows the model keeps packed sequences apart."""

from __future__ import annotations

import weakref

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening


def virtual_tokens(model) -> int:
    """Soft-prompt tokens PEFT prepends to every row (0 without a prompt)."""
    if not hasattr(model, "prompt_encoder"):
        return 0
    return model.peft_config[model.active_adapter].num_virtual_tokens


def logits_agree(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to floating-point noise, relative to the logits' size: different kernels (a packed mask or none)
    sum in another order, and logits of a trained model reach tens (1e-4 of the largest in float32, 2e-2 in
    16-bit floats; mixing packed sequences changes logits by far more)."""
    tol = 1e-4 if want.dtype == torch.float32 else 2e-2
    scale = want.abs().max().clamp(min=1.0)
    return bool(((got - want).abs().max() <= tol * scale).item())


_PACKING_OK: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


@torch.no_grad()
def packing_is_exact(model) -> bool:
    """Does this model keep packed sequences apart (position ids restarting at 0)?

    transformers builds a block-causal mask from restarting position ids for most
    decoder models; rather than trusting a list, two short sequences are run
    packed and apart once per model, and packing is used only if the logits agree.
    """
    if model not in _PACKING_OK:
        was = model.training
        model.eval()
        try:
            emb = model.get_input_embeddings()
            a = torch.arange(3, 8, device=emb.weight.device).unsqueeze(0) % emb.num_embeddings
            b = torch.arange(11, 14, device=emb.weight.device).unsqueeze(0) % emb.num_embeddings
            la = model(input_ids=a, use_cache=False).logits
            lb = model(input_ids=b, use_cache=False).logits
            pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=a.device)
            lp = model(input_ids=torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits
            _PACKING_OK[model] = logits_agree(lp[:, :5], la) and logits_agree(lp[:, 5:], lb)
        except Exception:  # an architecture without position ids: pad instead
            _PACKING_OK[model] = False
        finally:
            model.train(was)
    return _PACKING_OK[model]

def collator(tokenizer, packed: bool):
    """Packed: a batch is one row of concatenated examples with restarting position ids; else padded."""
    if packed:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
