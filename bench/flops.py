"""Achieved training FLOP rate vs this machine's measured fp32 (or bf16 on GPU) matmul rate.

Model FLOPs per step = 6 * N * tokens (N = parameters; the standard estimate for
forward + backward). The matmul rate is measured in the same run with square
matrix products. Their quotient is the model FLOPs utilisation (MFU).

retain applies the LM head (the vocabulary x hidden embedding matrix, tied) only
at positions that predict a label, so 6 * N * tokens counts work that is not
done; the script therefore also reports the conservative figure with N = the
non-embedding parameters, which is the one to quote.

    python bench/flops.py [--model smollm2-135m --batch-size 8 --length 128 --steps 3]

Last line: MFU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import step_timer, write_result
from bench.scaling import rows_of_length


def matmul_rate(n: int = 2048, repeats: int = 5, dtype=None) -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    import torch

    from retain.models import load_model

    loaded = load_model(args.model)
    model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    vocab = model.get_input_embeddings().num_embeddings
    peak = matmul_rate()
    step = step_timer(model, loaded.tokenizer, "model")(rows_of_length(args.batch_size, args.length, vocab), args.steps)
    tokens = args.batch_size * args.length
    achieved = 6 * n_params * tokens / step
    achieved_ne = 6 * (n_params - n_embed) * tokens / step
    peak_after = matmul_rate()
    peak = max(peak, peak_after)
    result = {"model": args.model, "parameters": n_params, "embedding_parameters": n_embed, "tokens_per_step": tokens,
              "step_s": round(step, 4), "model_flops_per_s": achieved, "non_embedding_flops_per_s": achieved_ne,
              "matmul_flops_per_s": peak, "mfu": round(achieved / peak, 4), "mfu_non_embedding": round(achieved_ne / peak, 4),
              "command": "python bench/flops.py " + " ".join(sys.argv[1:])}
    write_result("flops", result)
    print(f"{n_params / 1e6:.1f}M parameters, {tokens} tokens/step, {step:.3f}s/step: {achieved / 1e9:.1f} GFLOP/s "
          f"(6*N*tokens); fp32 matmul peak measured {peak / 1e9:.1f} GFLOP/s")
    print(f"non-embedding ({(n_params - n_embed) / 1e6:.1f}M parameters): {achieved_ne / 1e9:.1f} GFLOP/s")
    print(f"flops: model FLOPs utilisation {achieved / peak:.1%} (6*N*tokens), {achieved_ne / peak:.1%} (non-embedding N)")


if __name__ == "__main__":
    main()
