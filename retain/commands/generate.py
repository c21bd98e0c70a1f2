"""retain generate: outputs of a trained run (or a SwitchCIT registry) for some inputs."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="Generate with a trained run: the tuned task with its prompt, anything else without.", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="Run directory written by 'retain train'.")
    src.add_argument("--registry", metavar="DIR", help="SwitchCIT registry written by 'retain continual --method switchcit': each input is routed to its task's adapter; mixed tasks are generated in one pass.")
    p.add_argument("--base", metavar="MODEL", help="With --registry: the base model to load (default: the one recorded); its weights must match the recorded hash.")
    p.add_argument("--show-task", action="store_true", help="With --registry: prefix each output with the task it was routed to and a tab.")
    p.add_argument("--no-prompt", action="store_true", help="Drop the soft prompt (and the one-shot prefix): the fine-tuned model as is, for tasks other than the tuned one.")
    p.add_argument("--raw", action="store_true", help="Give the texts to the model as they are, without the run's template.")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="Tokens to generate (default: the run's, from its training outputs).")
    p.add_argument("--full", action="store_true", help="Print the whole continuation, not just its first line.")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="Inputs; with none, one input per line is read from standard input.")
    p.set_defaults(func=run)


def run(args) -> None:
    from retain.errors import RetainError

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise RetainError("generate: no input text (give TEXT arguments or lines on standard input)")
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise RetainError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.registry:
        from retain.continual.registry import load_registry

        names, outs = load_registry(args.registry, base=args.base).generate(texts, max_new_tokens=args.max_new_tokens,
                                                                            first_line=not args.full)
        for name, o in zip(names, outs):
            print(f"{name}\t{o}" if args.show_task else o)
        return
    if args.base or args.show_task:
        raise RetainError("--base and --show-task apply to --registry only")
    from retain.run import load_run

    outs = load_run(args.run).generate(texts, use_prompt=not args.no_prompt, raw=args.raw,
                                       max_new_tokens=args.max_new_tokens, first_line=not args.full)
    for o in outs:
        print(o)
