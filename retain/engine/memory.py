"""Peak memory of a training stage: an estimate printed before it runs, the measurement recorded after.

Estimate = weights + gradients + optimizer state + activations:

* weights: every distinct parameter tensor at its dtype (tied weights once);
* gradients: the trainable parameters at their dtype;
* optimizer state: AdamW keeps two moments per trainable parameter (at the parameter's dtype);
  Adafactor a row and a column vector per matrix; SGD none;
* activations, per transformer block (Korthikanti et al., 2022, "Reducing Activation Recomputation in Large
  Transformer Models"): ``s*b*h*(34 + 5*a*s/h)`` bytes at 16 bits (``s`` tokens per row, ``b`` rows, ``h``
  hidden size, ``a`` heads), scaled to the activation dtype; the attention-score term is dropped for
  flash attention; with gradient checkpointing each block keeps only its input (``2*s*b*h``) and one block
  is recomputed at a time; plus the logits and their gradient (float32) where a loss is taken.

Measured: on CUDA, ``torch.cuda.max_memory_allocated`` over the stage; on CPU, the process's peak resident
set size (``ru_maxrss``: everything the process ever held, Python and libraries included).
"""

from __future__ import annotations

import resource
import sys

import torch

GB = 1024**3


def _distinct(params) -> list[torch.nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append(p)
    return out


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _optimizer_bytes(optim: str, trainable) -> int:
    if optim.startswith("sgd"):
        return 0
    if optim.startswith("adafactor"):
        return sum((sum(p.shape) if p.dim() == 2 else p.numel()) * 4 for p in trainable)
    return 2 * _bytes(trainable)


def _dims(config) -> tuple[int, int, int, int]:
    """(hidden size, blocks, heads, vocabulary) of a transformers config, encoder + decoder blocks for seq2seq."""
    get = lambda *names: next((getattr(config, n) for n in names if getattr(config, n, None)), 0)
    layers = get("num_hidden_layers", "num_layers", "n_layer") + (get("num_decoder_layers") if config.is_encoder_decoder else 0)
    return get("hidden_size", "d_model", "n_embd"), layers, get("num_attention_heads", "num_heads", "n_head") or 1, get("vocab_size")


def estimate(model, cfg, *, rows: int, seq_len: int, loss_tokens: int) -> dict:
    """Bytes per part for a stage over ``rows`` rows of ``seq_len`` tokens, ``loss_tokens`` of them with a loss."""
    params = _distinct(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    weight_dtype = params[0].dtype if params else torch.float32
    act_bytes = 2 if cfg.mixed_precision != "no" or weight_dtype in (torch.bfloat16, torch.float16) else 4
    config = getattr(model, "config", None) or model.get_base_model().config
    h, layers, a, vocab = _dims(config)
    s, b = seq_len, rows
    attention = 0 if getattr(cfg, "attn_implementation", "sdpa") == "flash_attention_2" else 5 * a * s / max(h, 1)
    per_block = s * b * h * (34 + attention) * act_bytes / 2
    if cfg.gradient_checkpointing:
        blocks = layers * 2 * s * b * h * act_bytes / 2 + per_block
    else:
        blocks = layers * per_block
    logits = 2 * loss_tokens * vocab * 4
    parts = {"weights": _bytes(params), "gradients": _bytes(trainable),
             "optimizer": _optimizer_bytes(cfg.optim, trainable), "activations": int(blocks + logits)}
    return {**parts, "total": sum(parts.values())}


def human(n: float) -> str:
    return f"{n / GB:.2f} GiB" if n >= GB / 10 else f"{n / 1024**2:.1f} MiB"


def describe(est: dict) -> str:
    return (f"weights {human(est['weights'])}, gradients {human(est['gradients'])}, optimizer {human(est['optimizer'])}, "
            f"activations {human(est['activations'])}: about {human(est['total'])}")


def current() -> int | None:
    """Memory in use now: allocated on the GPU, or the process's resident set size (Linux)."""
    if torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return None


def start_measuring() -> int | None:
    """Reset the GPU's peak counter; returns the memory in use as the stage starts."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return current()


def measured_peak(at_start: int | None = None) -> dict:
    if torch.cuda.is_available():
        return {"bytes": int(torch.cuda.max_memory_allocated()), "at_start_bytes": at_start,
                "how": "torch.cuda.max_memory_allocated over the stage"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bytes": int(rss if sys.platform == "darwin" else rss * 1024), "at_start_bytes": at_start,
            "how": "peak resident set size of the process (ru_maxrss: Python, libraries and model loading included)"}
