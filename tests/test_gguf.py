"""A .gguf file loads through --model: write a tiny Llama GGUF with the gguf package."""

import numpy as np
import pytest
import torch

from retain.errors import RetainError
from retain.models import load_model


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stores q/k rows in the interleaved rotary order; transformers undoes this on load
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, model, tokenizer):
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t.startswith("<") and len(t) > 1 else 1 for t, _ in vocab])
    w.add_token_scores([0.0] * len(vocab))
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
                 "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, arr in sd.items():
        if name in names:
            w.add_tensor(names[name], arr)
            continue
        _, _, layer, *rest = name.split(".")
        key = ".".join(rest[:-1])
        if key == "self_attn.q_proj":
            arr = _permute(arr, cfg.num_attention_heads)
        elif key == "self_attn.k_proj":
            arr = _permute(arr, cfg.num_key_value_heads)
        w.add_tensor(f"blk.{layer}.{per_layer[key]}.weight", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_file_loads_with_the_same_logits(tmp_path):
    tiny = load_model("tiny-random-llama")
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, tiny.model, tiny.tokenizer)
    loaded = load_model(str(path))
    assert not loaded.is_seq2seq
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = tiny.model(ids).logits
        got = loaded.model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert loaded.tokenizer.decode(loaded.tokenizer("hello world", add_special_tokens=False)["input_ids"]) == "hello world"
    # a GGUF-loaded model is plain: it can be saved and reloaded (transformers refuses this for raw GGUF loads)
    loaded.model.save_pretrained(tmp_path / "saved")


def test_truncated_gguf_is_a_clear_error(tmp_path):
    tiny = load_model("tiny-random-llama")
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, tiny.model, tiny.tokenizer)
    data = path.read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(RetainError, match=r"truncated\.gguf"):
        load_model(str(bad))
