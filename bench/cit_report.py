"""docs/results/NAME.md, NAME.json and plots from the finished methods of bench/cit.py (runs/NAME/<method>/).

Every number comes from the methods' results.json (``retain.continual.measure``: Last and Avg ± SE, BWT and FWT with
their paired 95% intervals, forgetting; ``retain.continual.general``: the general-ability delta with its paired
interval) or from ``retain.evaluation.paired.paired_norm_avg`` (paired differences of the final average between
methods); the per-method tables are ``retain.continual.report``'s. "What holds at 95%" reads those intervals
against the SwitchCIT paper's expectations with one stated margin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"
RESULT_FILES = ("results.json", "results.md", "R.png", "average.png")  # what NAME/<method>/ keeps of a finished method


def load(runs: Path, methods: list[str]) -> dict[str, dict]:
    return {m: json.loads((runs / m / "results.json").read_text()) for m in methods if (runs / m / "results.json").is_file()}


def _f(x, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""


def _bold(text: str, ci) -> str:
    return f"**{text}**" if ci and (ci[0] > 0 or ci[1] < 0) else text


def final_units(res: dict) -> dict:
    """{task: (metric, (), units)} of the last stage, as ``paired.paired_norm_avg`` takes them."""
    last = res["details"][-1] if res.get("details") else {}
    return {t: (m, (), (last.get(t) or {}).get("units")) for t, m in zip(res["tasks"], res["metrics"])}


def final_difference(a: dict, b: dict) -> dict | None:
    """Final average, B - A, paired over the same validation items (None without per-item units)."""
    from retain.evaluation.paired import paired_norm_avg
    from retain.evaluation.stats import PairingError

    ua, ub = final_units(a), final_units(b)
    if not all(u for _, _, u in [*ua.values(), *ub.values()]):
        return None
    try:
        return paired_norm_avg(ua, ub)
    except PairingError:
        return None


def general_delta(res: dict) -> dict | None:
    """The deployed system's change from the base model on the general suite after the last stage."""
    stages = (res.get("general") or {}).get("stages") or []
    return stages[-1].get("delta") if stages else None


# ------------------------------------------------------------------ verdicts
def about_zero(ci, margin: float) -> str:
    """Holds when the interval lies within ±margin, does not hold when it lies wholly outside it."""
    if not ci:
        return UNDECIDED
    if -margin <= ci[0] and ci[1] <= margin:
        return HOLDS
    return FAILS if ci[1] < -margin or ci[0] > margin else UNDECIDED


def below_zero(ci, margin: float) -> str:
    """Holds when the interval is wholly below 0; does not hold when it rules out a loss larger than the margin."""
    if not ci:
        return UNDECIDED
    if ci[1] < 0:
        return HOLDS
    return FAILS if ci[0] >= -margin else UNDECIDED


def not_below(ci, margin: float) -> str:
    """Holds when the interval rules out a shortfall larger than the margin; does not hold when it is wholly below -margin."""
    if not ci:
        return UNDECIDED
    return HOLDS if ci[0] >= -margin else FAILS if ci[1] < -margin else UNDECIDED


def combine(verdicts: list[str]) -> str:
    return FAILS if FAILS in verdicts else HOLDS if verdicts and all(v == HOLDS for v in verdicts) else UNDECIDED


def holds(results: dict, methods: list[str], margin: float) -> list[str]:
    """The generated section "What holds at 95%"."""
    sw, mt, seq = results.get("switchcit"), results.get("multitask"), results.get("sequential")
    rows = []
    ci = (sw or {}).get("summary", {}).get("bwt_ci")
    rows.append(("switchcit forgets nothing: its BWT is about 0", f"BWT interval within ±{margin:g}",
                 f"{_f(sw['summary']['bwt'])} {_ci(ci)}" if sw else "not yet run", about_zero(ci, margin)))
    d = final_difference(mt, sw) if sw and mt else None
    rows.append(("switchcit's final average is near multitask's", f"switchcit − multitask interval above −{margin:g}",
                 _diff(d) if d else "not yet run" if not (sw and mt) else "no per-item units",
                 not_below(d and d["ci"], margin)))
    ci = (seq or {}).get("summary", {}).get("bwt_ci")
    rows.append(("sequential fine-tuning forgets: its BWT is below 0", "BWT interval below 0",
                 f"{_f(seq['summary']['bwt'])} {_ci(ci)}" if seq else "not yet run", below_zero(ci, margin)))
    rows.append(_general_row(results, methods, margin))
    lines = ["## What holds at 95%", "",
             f"The SwitchCIT paper's expectations read against the 95% intervals above (margin: {margin:g} points on the "
             "0-100 scale). *holds*: the interval shows it; *does not hold*: the interval rules it out; *undecided*: "
             "the interval allows both, or the methods have not run yet.", "",
             "| expectation | test | measured [95% CI] | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | **{v}** |" for a, b, c, v in rows]
    return lines + [""]


def _general_row(results: dict, methods: list[str], margin: float) -> tuple:
    sw = results.get("switchcit")
    others = [m for m in methods if m != "switchcit"]
    general_class = bool(sw and (sw["config"].get("general_data") or "none") != "none")
    d = general_delta(sw) if sw else None
    parts = [about_zero(d and d["ci"], margin) if general_class else UNDECIDED]
    shown = [f"switchcit {d['diff']:+.2f} {_ci(d['ci'])}" if d else "switchcit " + ("not yet run" if not sw else "not measured")]
    for m in others:
        dm = general_delta(results[m]) if m in results else None
        parts.append(below_zero(dm and dm["ci"], margin))
        shown.append(f"{m} {dm['diff']:+.2f} {_ci(dm['ci'])}" if dm else f"{m} " + ("not yet run" if m not in results else "not measured"))
    test = (f"switchcit's interval within ±{margin:g}, every other method's below 0"
            + ("" if general_class or not sw else " (switchcit ran without a general class)"))
    return ("with the general class, switchcit keeps the base's general ability where every other method loses it",
            test, "; ".join(shown), combine(parts))


# ------------------------------------------------------------------ the document
def summary_table(results: dict, methods: list[str]) -> list[str]:
    lines = ["| method | Last ± SE | Avg ± SE | BWT [95% CI] | FWT [95% CI] | forgetting | general Δ from base [95% CI] | "
             "routing: tasks / general inputs to base | wall time |", "|---" * 9 + "|"]
    for m in methods:
        if m not in results:
            lines.append(f"| {m} | not yet run |" + " |" * 7)  # 9 columns
            continue
        res = results[m]
        s, g, r = res["summary"], general_delta(res), (res.get("routing") or [None])[-1]
        routing = " / ".join(_f(x, ".1f") + "%" if x is not None else "–" for x in (r["accuracy"], r.get("general_accuracy"))) if r else "–"
        lines.append(f"| {m} | {_f(s['last'])} ± {_f(s.get('last_se'))} | {_f(s.get('avg'))} ± {_f(s.get('avg_se'))} | "
                     f"{_bold(_f(s['bwt']) + ' ' + _ci(s.get('bwt_ci')), s.get('bwt_ci'))} | "
                     f"{_bold(_f(s.get('fwt')) + ' ' + _ci(s.get('fwt_ci')), s.get('fwt_ci'))} | {_f(s['forgetting'])} | "
                     + (_bold(f"{g['diff']:+.2f} {_ci(g['ci'])}", g["ci"]) if g else "–")
                     + f" | {routing} | {res['wall_time_s'] / 60:.0f} min |")
    return lines + ["", "Last: the final average over the tasks, ± sqrt(sum of the tasks' squared SEs) / T. Avg: the mean "
                    "of the averages per stage, ± its SE (each item's scores summed over the stages first: they share "
                    "their items; `retain.continual.measure`). Forgetting has no interval (a maximum over stages, biased "
                    "under resampling). BWT, FWT and the general-ability delta: paired "
                    "bootstrap over the same items, 2000 resamples; **bold**: the interval excludes 0. General Δ: after "
                    "the last stage. Routing: the switch's (or Arrow's) accuracy on the tasks' validation inputs, and the "
                    "share of held-out general inputs sent to the base model (switchcit's general class).", ""]


def pairwise(results: dict) -> list[str]:
    names = list(results)
    rows = [(a, b, final_difference(results[a], results[b])) for i, a in enumerate(names) for b in names[i + 1:]]
    rows = [(a, b, d) for a, b, d in rows if d]
    if not rows:
        return []
    return (["## Final average: paired differences", "", "B − A over the same validation items (95% bootstrap interval; "
             "**bold**: excludes 0).", "", "| B − A | difference [95% CI] |", "|---|---|"]
            + [f"| {b} − {a} | {_bold(_diff(d), d['ci'])} |" for a, b, d in rows] + [""])


def _diff(d: dict) -> str:
    return f"{d['diff']:+.2f} {_ci(d['ci'])}"


def method_section(m: str, res: dict, name: str, command: str) -> list[str]:
    from retain.continual.report import general_lines, matrix_lines, routing_lines

    lines = [f"### {m}", "", f"![R]({name}/{m}/R.png) ([results.md]({name}/{m}/results.md))", ""]
    lines += matrix_lines(res)
    if res.get("routing"):
        lines += [""] + routing_lines(res["routing"])
    lines += general_lines(res.get("general"))
    lines += ["", "```", res.get("command") or command, "```", ""]
    return lines


def budget_lines(results: dict, command: str) -> list[str]:
    any_res = next(iter(results.values()))
    cfg = any_res["config"]
    lrs = ", ".join(f"{m} {r['config']['lr']:g}" if r["config"].get("lr") else f"{m} its default" for m, r in results.items())
    return [f"Model `{any_res['model']}`; tasks in order {', '.join(any_res['tasks'])} (metrics "
            + ", ".join(f"{t} {m}" for t, m in zip(any_res["tasks"], any_res["metrics"]))
            + f"); {cfg['max_steps']} steps per task (multitask: {cfg['max_steps'] * len(any_res['tasks'])} on the mixture), "
            f"batch {cfg['batch_size']}, max length {cfg['max_length']}, seed {cfg['seed']}; R on the first {cfg['eval_samples']} "
            f"validation items per task, greedy decoding; best weights per task scored every {cfg['eval_every']} steps on "
            f"the next {cfg['select_samples']} items; switch general class `{cfg['general_data']}`; general ability on "
            f"`{cfg['general_suite']}` ({cfg['general_examples']} items per task, {cfg['general_shots']}-shot). "
            f"Learning rates: {lrs} (the registry's: 2e-4 LoRA, 2e-5 full fine-tuning and OSF). Why this budget, and "
            "its estimated cost per method: bench/cit.py's docstring and [CONTINUAL.md](../CONTINUAL.md#benchmark); "
            "the measured wall time is in the table.", "",
            "Command (rerun it to continue: finished methods are skipped, an interrupted one resumes):", "", "```", command, "```", ""]


def plots(results: dict, docs: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retain.continual.report import plot_average_on

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for res in results.values():
        plot_average_on(ax, res)
    ax.legend(fontsize=7)
    ax.set_title("CIT: average over the tasks seen")
    fig.tight_layout()
    fig.savefig(docs / f"{name}_average.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, (m, res) in enumerate(results.items()):
        stages = [s for s in (res.get("general") or {}).get("stages") or [] if s.get("delta")]
        xs = [i + 1 + 0.05 * (k - len(results) / 2) for i in range(len(stages))] if len(stages) > 1 else [len(res["tasks"])]
        ys = [s["delta"]["diff"] for s in stages]
        err = [[y - s["delta"]["ci"][0] for y, s in zip(ys, stages)], [s["delta"]["ci"][1] - y for y, s in zip(ys, stages)]]
        if stages:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(1, max(len(r["tasks"]) for r in results.values()) + 1))
    ax.set_title("CIT: general ability, change from the base model")
    ax.set_xlabel("tasks learnt")
    ax.set_ylabel("general ability − base (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / f"{name}_general.png", dpi=100)
    plt.close(fig)


def _shown(path: Path) -> str:
    """A path relative to the checkout when it is inside it."""
    root = Path(__file__).resolve().parents[1]
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def write(runs: Path, docs: Path, name: str, *, command: str, methods: list[str], margin: float, argv,
          stale: dict[str, list[str]]) -> None:
    """``stale``: finished methods whose options differ from the command's ({method: those options}): left out."""
    results = {m: r for m, r in load(runs, methods).items() if m not in stale}
    docs.mkdir(parents=True, exist_ok=True)
    for m in results:
        dest = docs / name / m
        dest.mkdir(parents=True, exist_ok=True)
        for f in RESULT_FILES:
            shutil.copyfile(runs / m / f, dest / f)
    slim = {m: {**r, "details": [{t: {k: v for k, v in e.items() if k != "units"} for t, e in d.items()} for d in r.get("details", [])],
                "general": {**r["general"], "evals": None} if r.get("general") else None} for m, r in results.items()}
    if slim:
        (docs / f"{name}.json").write_text(json.dumps(slim, indent=2))
    missing = [m for m in methods if m not in results]
    lines = [f"# Continual instruction tuning on CIT: {len(results)} of {len(methods)} methods", ""]
    if missing:
        lines += ["Not yet run: " + ", ".join(f"{m} (finished with other options: {', '.join(stale[m])})" if m in stale else m
                                          for m in missing) + ". Each would run as:", "", "```"] + [argv(m) for m in missing] + ["```", ""]
    if results:
        plots(results, docs, name)
        lines += budget_lines(results, command) + summary_table(results, methods) + holds(results, methods, margin)
        lines += pairwise(results)
        lines += [f"![average per stage]({name}_average.png) ![general ability]({name}_general.png)", "",
                  "Routing cost of the switch vs Arrow on these adapters: `python bench/routing.py --registry "
                  f"{_shown(runs / 'switchcit')}` (bench/results/routing.md).", "", "## Per method", ""]
        for m, res in results.items():
            lines += method_section(m, res, name, argv(m))
    else:
        lines += ["No method has finished yet.", "", "```", command, "```", ""]
    (docs / f"{name}.md").write_text("\n".join(lines))
    print(f"[cit] wrote {docs / (name + '.md')} ({len(results)} of {len(methods)} methods)", flush=True)
