"""Comparison tables (the paper's layout) and plots, every figure with its uncertainty.

``results`` is ``{"methods": {METHOD: eval result (see harness)}, "tuned_task": NAME, "shots": [k, ...], ...}``.

Per shot count, two tables:

1. scores: rows = tuned task, every suite task, Norm. Avg. (change from base
   in brackets) and the format-specialization rate; columns = methods; cells
   ``score ± standard error``; the metric column carries the item count n, and
   a task with n < ``SMALL_N`` is marked ``⚠``.
2. paired differences (B - A): one column per comparison (every method vs
   base, then every pair), cells ``+diff [lo, hi]`` (95% paired bootstrap),
   significant ones in bold with ``*``; McNemar's exact p in a third table
   where available.

Figures read, for each method's eval result (written by the harness,
``retain.evaluation.stats.attach_summaries``):

* ``tasks[NAME]["summary"][k]``: ``{"score", "se", "n", "n_units", "method"}``
* ``norm_avg_summary[k]``: ``{"score", "se", "n_tasks"}``
* ``tuned["summary"]``: like a task summary

and ``results["paired"]`` (``retain.evaluation.paired.compare_methods``). Missing
summaries are computed from ``units`` when present; with neither, the bare
``scores``/``norm_avg``/``tuned["score"]`` of older results are shown without
an error. Missing ``paired`` is computed from the units when present.
"""

from __future__ import annotations

from pathlib import Path

from retain.evaluation.paired import comparison_key, comparisons
from retain.evaluation.stats import SMALL_N, WARN


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pm(s: dict | None) -> str:
    if not s or s.get("score") is None:
        return "-"
    return _f(s["score"]) + (f" ± {s['se']:.2f}" if s.get("se") is not None else "")


def _delta(v, base) -> str:
    if v is None or base is None:
        return ""
    return f" ({v - base:+.2f})"


# ------------------------------------------------------------------ reading figures
def _task_summary(rec: dict | None, key: str) -> dict | None:
    if not rec:
        return None
    s = (rec.get("summary") or {}).get(key)
    if s is not None:
        return s
    units = (rec.get("units") or {}).get(key)
    if units:
        from retain.evaluation.stats import summarize

        return summarize(rec["metric"], units, options=tuple(rec.get("match") or ()))
    v = (rec.get("scores") or {}).get(key)
    return None if v is None else {"score": v, "se": None, "n": rec.get("n"), "n_units": 1, "method": None}


def _tuned_summary(t: dict | None) -> dict | None:
    if not t:
        return None
    if t.get("summary"):
        return t["summary"]
    if t.get("units"):
        from retain.evaluation.stats import summarize

        return summarize(t["metric"], t["units"], options=tuple(t.get("match") or ()))
    return None if t.get("score") is None else {"score": t["score"], "se": None, "n": t.get("n"), "n_units": 1, "method": None}


def _avg_summary(ev: dict, key: str) -> dict | None:
    s = (ev.get("norm_avg_summary") or {}).get(key)
    if s is not None:
        return s
    tasks = ev.get("tasks") or {}
    if any((r.get("summary") or {}).get(key) or (r.get("units") or {}).get(key) for r in tasks.values()):
        from retain.evaluation.stats import norm_avg

        return norm_avg({n: _task_summary(r, key) for n, r in tasks.items()})
    v = (ev.get("norm_avg") or {}).get(key)
    return None if v is None else {"score": v, "se": None, "n_tasks": None}


def _has_key(rec: dict, key: str) -> bool:
    return any(key in (rec.get(f) or {}) for f in ("summary", "units", "scores"))


def _n_label(metric: str, s: dict | None) -> tuple[str, bool]:
    """('exact_match, n=100', small?) for the metric column."""
    if not s or not s.get("n"):
        return metric, False
    return f"{metric}, n={s['n']}", s["n"] < SMALL_N


def _draws_label(res: dict, m: str, key: str) -> str:
    """Column header: the method, with its number of draws (seeds x re-draws) when more than one."""
    ev = res[m]
    sums = [_task_summary(r, key) for r in (ev.get("tasks") or {}).values()] + [_tuned_summary(ev.get("tuned"))]
    d = max([(s or {}).get("n_units") or 1 for s in sums] or [1])
    return m if d <= 1 else f"{m} ({d} draws)"


def _paired(results: dict) -> dict | None:
    if results.get("paired") is not None:
        return results["paired"]
    if any(r.get("units") for ev in results["methods"].values() for r in (ev.get("tasks") or {}).values()):
        from retain.evaluation.paired import compare_methods

        return compare_methods(results)
    return None


# ------------------------------------------------------------------ tables
def comparison_table(results: dict, k: int) -> str:
    """Scores ± standard error, one column per method; n and the small-n marker in the first columns."""
    methods = list(results["methods"])
    key = str(k)
    res = results["methods"]
    base_avg = _avg_summary(res["base"], key) if "base" in res else None
    base = base_avg.get("score") if base_avg else None
    lines = ["| task | metric | " + " | ".join(_draws_label(res, m, key) for m in methods) + " |",
             "|---|---|" + "---:|" * len(methods)]
    first = res[methods[0]]
    tuned = first.get("tuned") or next((res[m]["tuned"] for m in methods if res[m].get("tuned")), None)
    if tuned:
        sums = {m: _tuned_summary(res[m].get("tuned")) for m in methods}
        label, small = _n_label(tuned["metric"], next((s for s in sums.values() if s), None))
        cells = [_pm(sums[m]) + (" (p)" if (res[m].get("tuned") or {}).get("prompt") else "") for m in methods]
        lines.append(f"| **{tuned['name']}** (tuned task){' ' + WARN if small else ''} | {label} | " + " | ".join(cells) + " |")
    for name, rec in first["tasks"].items():
        if not _has_key(rec, key):
            continue
        sums = {m: _task_summary(res[m]["tasks"].get(name), key) for m in methods}
        label, small = _n_label(rec["metric"], next((s for s in sums.values() if s), None))
        lines.append(f"| {name}{' ' + WARN if small else ''} | {label} | " + " | ".join(_pm(sums[m]) for m in methods) + " |")
    cells = []
    for m in methods:
        s = _avg_summary(res[m], key)
        v = s.get("score") if s else None
        cells.append(f"**{_pm(s)}**" + (_delta(v, base) if m != "base" else ""))
    lines.append("| **Norm. Avg.** | | " + " | ".join(cells) + " |")
    lines.append("| format specialization (%) | | " + " | ".join(_f((res[m].get("format_rate") or {}).get(key)) for m in methods) + " |")
    return "\n".join(lines)


def _diff_cell(p: dict | None) -> str:
    if not p or p.get("diff") is None:
        return "-"
    lo, hi = p["ci"]
    text = f"{p['diff']:+.2f} [{lo:.2f}, {hi:.2f}]"
    return f"**{text}** *" if p.get("significant") else text


PAIRED_COLUMNS = 6  # comparisons per paired-difference table (more are split into several tables)


def _paired_rows(results: dict, comps: list, cols: list) -> list[str]:
    res = results["methods"]
    methods = list(res)
    head = ["| task | " + " | ".join(f"{b} − {a}" for a, b in comps) + " |", "|---|" + "---:|" * len(comps)]
    lines = list(head)
    tuned = next((res[m]["tuned"] for m in methods if res[m].get("tuned")), None)
    rows = []  # (label, getter)
    if tuned and any(c.get("tuned") for c in cols):
        rows.append((f"**{tuned['name']}** (tuned task)", lambda c: c.get("tuned")))
    for name in dict.fromkeys(n for c in cols for n in c.get("tasks", {})):
        small = any((c["tasks"].get(name) or {}).get("n", SMALL_N) < SMALL_N for c in cols)
        rows.append((name + (f" {WARN}" if small else ""), lambda c, n=name: c["tasks"].get(n)))
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_diff_cell(get(c)) for c in cols) + " |")
    lines.append("| **Norm. Avg.** | " + " | ".join(_diff_cell(c.get("norm_avg")) for c in cols) + " |")
    mc_rows = []
    for label, get in rows:
        ps = [(get(c) or {}).get("mcnemar_p") for c in cols]
        if any(p is not None for p in ps):
            mc_rows.append(f"| {label} | " + " | ".join("-" if p is None else f"{p:.3g}" for p in ps) + " |")
    if mc_rows:
        lines += ["", "McNemar exact test, p (tasks scored 0/100 per item, one draw per method):", ""] + head + mc_rows
    return lines


def paired_table(results: dict, k: int, paired: dict | None = None) -> str:
    """Paired differences B - A with their interval, one column per comparison ("" if none).

    Rows: tuned task, suite tasks, Norm. Avg.; at most ``PAIRED_COLUMNS`` comparisons
    per table (several tables otherwise), each followed by McNemar p where available.
    ``paired``: ``compare_methods`` output; default ``results["paired"]``, else computed from the units."""
    paired = paired if paired is not None else _paired(results)
    per_k = (paired or {}).get(str(k)) or {}
    comps = [(a, b) for a, b in comparisons(list(results["methods"])) if comparison_key(a, b) in per_k]
    blocks = []
    for i in range(0, len(comps), PAIRED_COLUMNS):
        chunk = comps[i:i + PAIRED_COLUMNS]
        blocks.append("\n".join(_paired_rows(results, chunk, [per_k[comparison_key(a, b)] for a, b in chunk])))
    return "\n\n".join(blocks)


def _paired_settings(paired: dict) -> tuple[str, str]:
    """('95%', '2000') from the stored paired results (levels and resample counts used)."""
    found = [r for per_k in paired.values() for c in per_k.values()
             for r in [c.get("tuned"), c.get("norm_avg"), *c.get("tasks", {}).values()] if r]
    levels = sorted({r.get("level", 0.95) for r in found})
    boots = sorted({r.get("n_boot") for r in found if r.get("n_boot")}, reverse=True)
    return "/".join(f"{100 * v:g}%" for v in levels) or "95%", "/".join(map(str, boots)) or "?"


def markdown_report(results: dict, title: str = "Comparison") -> str:
    out = [f"# {title}", ""]
    meta = results.get("setup", {})
    if meta:
        out.append("| setting | value |")
        out.append("|---|---|")
        for k, v in meta.items():
            out.append(f"| {k} | `{v}` |")
        out.append("")
    small_any = False
    paired_any = False
    paired = _paired(results)
    for k in results["shots"]:
        out.append(f"## {k}-shot")
        out.append("")
        table = comparison_table(results, k)
        small_any |= WARN in table
        out.append(table)
        out.append("")
        diffs = paired_table(results, k, paired) if paired else ""
        if diffs:
            paired_any = True
            level, _ = _paired_settings(paired)
            out += [f"Paired differences, {k}-shot (column B − A; {level} interval):", "", diffs, ""]
    out.append("Tuned task: scored in its own format; `(p)` = with the soft prompt. Other tasks: k-shot, "
               "without the prompt (the paper's rule). Norm. Avg. = mean over the suite tasks, change from base in "
               "brackets. Format specialization = share of suite answers in the tuned task's output space.")
    out.append("")
    out.append("`score ± SE`: standard error; n = items scored per draw (`(d draws)` after a method: its score "
               "is the mean over d draws = training seeds × demonstration/test re-draws). SE: closed form "
               "(sample std / √n) for one draw of a per-item metric, bootstrap over items for corpus metrics "
               "(BLEU, chrF), hierarchical bootstrap (seeds, re-draws, then items) for several draws. "
               "Norm. Avg. SE = √(Σ SEᵢ²) / T (tasks on independent items).")
    out.append("")
    if small_any:
        out.append(f"{WARN} fewer than {SMALL_N} items: the score and its standard error are unreliable.")
        out.append("")
    if paired_any:
        level, boots = _paired_settings(paired)
        out.append(f"Paired differences: B − A on the same items; {level} percentile interval of a paired bootstrap "
                   f"({boots} resamples): the same resampled items for A and B, re-draws resampled, each method's "
                   "training seeds resampled independently. **Bold** and `*`: the interval excludes 0. "
                   "McNemar: exact binomial test on the discordant items.")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------ plots
def plot(results: dict, out_dir: Path, k: int | None = None) -> list[Path]:
    """tradeoff.png (tuned-task score vs Norm. Avg., ± SE bars), tasks.png (per-task bars, ± SE) at ``k`` shots (default:
    the last of ``results["shots"]``); another count's plots are named ``tradeoff-Kshot.png``, ``tasks-Kshot.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    k = k if k is not None else results["shots"][-1]
    key, suffix = str(k), "" if k == results["shots"][-1] else f"-{k}shot"
    res = results["methods"]
    methods = list(res)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, m in enumerate(methods):
        ts, avg = _tuned_summary(res[m].get("tuned")), _avg_summary(res[m], key)
        t, a = (ts or {}).get("score"), (avg or {}).get("score")
        if t is None or a is None:
            continue
        ax.errorbar([t], [a], xerr=[(ts.get("se") or 0.0)], yerr=[(avg.get("se") or 0.0)], fmt="o", ms=7, capsize=3,
                    color=f"C{i % 10}", label=m)
        ax.annotate(m, (t, a), textcoords="offset points", xytext=(6, 4))
    name = next((res[m]["tuned"]["name"] for m in methods if res[m].get("tuned")), "tuned task")
    ax.set_xlabel(f"{name} score (tuned task, ± SE)")
    ax.set_ylabel(f"Norm. Avg. ({k}-shot, other tasks, ± SE)")
    ax.set_title("What fine-tuning gained vs what it kept")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / f"tradeoff{suffix}.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    tasks = [t for t, rec in res[methods[0]]["tasks"].items() if _has_key(rec, key)]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(tasks) * max(1, len(methods)) / 2.5), 4.5))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        sums = [_task_summary(res[m]["tasks"].get(t), key) or {} for t in tasks]
        vals = [s.get("score") or 0.0 for s in sums]
        errs = [s.get("se") or 0.0 for s in sums]
        ax.bar([x + i * width for x in range(len(tasks))], vals, width=width, label=m, yerr=errs, capsize=2,
               error_kw={"elinewidth": 0.8})
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=35, ha="right")
    ax.set_ylabel(f"score ({k}-shot, ± SE)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    p = out_dir / f"tasks{suffix}.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)
    return paths
