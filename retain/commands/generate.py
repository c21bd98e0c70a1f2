"""retain generate: outputs of a trained run (or a SwitchCIT registry) for some inputs."""

from __future__ import annotations

from retain.commands import add_command
from retain.workflows.options import GenerateOptions


def add_parser(sub) -> None:
    add_command(sub, "generate", GenerateOptions, run, description=__doc__,
                help="Generate with a trained run: the tuned task with its prompt, anything else without.")


def run(args) -> None:
    import sys

    from retain.config import build
    from retain.errors import RetainError
    from retain.evaluation.decoding import using

    o = build(GenerateOptions, args)
    texts = list(o.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise RetainError("generate: no input text (give TEXT arguments or lines on standard input)")
    with using(o.num_beams):
        _generate(o, texts)


def _generate(o, texts: list[str]) -> None:
    import json

    from retain.errors import RetainError

    if o.registry:
        if o.task:
            raise RetainError("--task applies to --run (a registry routes each input to its task)")
        from retain.continual.registry import load_registry

        names, outs = load_registry(o.registry, base=o.base).generate(texts, max_new_tokens=o.max_new_tokens,
                                                                      first_line=not o.full)
        for text, name, out in zip(texts, names, outs):
            if o.json:
                print(json.dumps({"input": text, "output": out, "adapter": name}, ensure_ascii=False))
            else:
                print(f"{'base' if name is None else name}\t{out}" if o.show_task else out)
        return
    if o.base or o.show_task:
        raise RetainError("--base and --show-task apply to --registry only")
    from retain.run import load_run

    outs = load_run(o.run, task=o.task).generate(texts, use_prompt=not o.no_prompt, raw=o.raw,
                                                 max_new_tokens=o.max_new_tokens, first_line=not o.full)
    for text, out in zip(texts, outs):
        print(json.dumps({"input": text, "output": out}, ensure_ascii=False) if o.json else out)
