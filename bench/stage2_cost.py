"""Stage 2 cost: a packed ProMoT stage-2 step vs a packed full fine-tuning step on the same batch, by batch size.

Stage 2 trains the whole model, like full fine-tuning, with the frozen soft prompt in the row: in the
packed ``shared`` layout (``retain.engine.prompt_packing``) one copy of the prompt heads each row and every
example attends to it. Every layer then processes the prompt's positions besides the real tokens, and
their keys and values carry gradient to the weights, so an exact stage-2 step costs at least what a full
step on ``real + prompt`` tokens costs: real / (real + prompt) is the bound on the ratio of real tokens/s
from token count alone (the optimizer step, the same on both sides, lifts it slightly). Both steps are the
engine's own (selective-logit loss, fused AdamW); the sides alternate per batch size
(A B, then B A, ...); best of the repeats.

    OMP_NUM_THREADS=1 python bench/stage2_cost.py [--batch-sizes 8,16,32 --steps 3 --repeats 2]

Last line: the stage-2 / full real-tokens/s ratio at the largest batch size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import sst2_rows, step_timer, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec (retain alias, path or Hub id)")
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32],
                    help="comma-separated examples per step (the first N SST-2 training examples)")
    ap.add_argument("--prompt-length", type=int, default=20, help="soft-prompt tokens")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per side and repeat (after 1 warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best per side is kept")
    args = ap.parse_args()

    from retain.config import TrainConfig
    from retain.engine.prompt_packing import prompt_packing_layout
    from retain.methods import wrap
    from retain.models import load_model

    loaded = load_model(args.model)
    cfg = TrainConfig(model=args.model, prompt_length=args.prompt_length)
    model = wrap(loaded.model, loaded.tokenizer, "promot", cfg, loaded.is_seq2seq)
    layout = prompt_packing_layout(model)
    if layout is None:
        sys.exit(f"{args.model}: soft-prompt packing is not exact for this model (stage 2 pads); nothing to compare")
    stage2 = step_timer(model, loaded.tokenizer, "model", packing=layout)
    full = step_timer(model.get_base_model(), loaded.tokenizer, "model", packing=True)  # same weights, no prompt
    rows_out = []
    for b in args.batch_sizes:
        rows = sst2_rows(loaded.tokenizer, b)
        real = sum(len(r["input_ids"]) for r in rows)
        prompt = args.prompt_length * (1 if layout == "shared" else b)
        s2_s, full_s = [], []
        for r in range(args.repeats):  # A B, then B A: neither side always runs first
            for side, times in ((full, full_s), (stage2, s2_s))[:: 1 if r % 2 == 0 else -1]:
                times.append(side(rows, args.steps))
        ratio = min(full_s) / min(s2_s)  # same real tokens on both sides: the time ratio is the tokens/s ratio
        rows_out.append({"batch_size": b, "real_tokens": real, "prompt_tokens": prompt, "full_step_s": full_s,
                         "stage2_step_s": s2_s, "ratio": round(ratio, 3), "token_bound": round(real / (real + prompt), 3)})
        print(f"batch {b:3d}: {real} real + {prompt} prompt tokens; full {min(full_s):.2f}s, stage 2 {min(s2_s):.2f}s per step;"
              f" stage 2 / full real tokens/s {ratio:.3f} (token-count bound {real / (real + prompt):.3f})", flush=True)
    result = {"model": args.model, "layout": layout, "prompt_length": args.prompt_length, "by_batch_size": rows_out,
              "command": "python bench/stage2_cost.py " + " ".join(sys.argv[1:])}
    write_result("stage2_cost", result)
    last = rows_out[-1]
    print(f"stage2_cost ratio (stage 2 / full real tokens/s, batch {last['batch_size']}): {last['ratio']:.2f}x")


if __name__ == "__main__":
    main()
