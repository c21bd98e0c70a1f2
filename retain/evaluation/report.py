"""Comparison tables (the paper's layout) and plots.

``results`` is ``{"methods": {METHOD: eval result (see harness)}, "tuned_task": NAME, ...}``.
Table: rows = tuned task, then every suite task, then Norm. Avg. (change
from base in brackets) and the format-specialization rate; columns = methods.
"""

from __future__ import annotations

from pathlib import Path


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _delta(v, base) -> str:
    if v is None or base is None:
        return ""
    return f" ({v - base:+.2f})"


def comparison_table(results: dict, k: int) -> str:
    methods = list(results["methods"])
    key = str(k)
    res = results["methods"]
    base = res.get("base", {}).get("norm_avg", {}).get(key) if "base" in res else None
    head = "| task | metric | " + " | ".join(methods) + " |"
    lines = [head, "|---|---|" + "---:|" * len(methods)]
    first = res[methods[0]]
    tuned = first.get("tuned")
    if tuned:
        cells = []
        for m in methods:
            t = res[m].get("tuned") or {}
            cells.append(_f(t.get("score")) + (" (p)" if t.get("prompt") else ""))
        lines.append(f"| **{tuned['name']}** (tuned task) | {tuned['metric']} | " + " | ".join(cells) + " |")
    names = list(first["tasks"])
    for name in names:
        rec = first["tasks"][name]
        if key not in rec["scores"]:
            continue
        cells = [_f(res[m]["tasks"].get(name, {}).get("scores", {}).get(key)) for m in methods]
        lines.append(f"| {name} | {rec['metric']} | " + " | ".join(cells) + " |")
    cells = []
    for m in methods:
        v = res[m]["norm_avg"].get(key)
        cells.append(f"**{_f(v)}**" + (_delta(v, base) if m != "base" else ""))
    lines.append("| **Norm. Avg.** | | " + " | ".join(cells) + " |")
    lines.append("| format specialization (%) | | " + " | ".join(_f(res[m]["format_rate"].get(key)) for m in methods) + " |")
    return "\n".join(lines)


def markdown_report(results: dict, title: str = "Comparison") -> str:
    out = [f"# {title}", ""]
    meta = results.get("setup", {})
    if meta:
        out.append("| setting | value |")
        out.append("|---|---|")
        for k, v in meta.items():
            out.append(f"| {k} | `{v}` |")
        out.append("")
    for k in results["shots"]:
        out.append(f"## {k}-shot")
        out.append("")
        out.append(comparison_table(results, k))
        out.append("")
    out.append("Tuned task: scored in its own format; `(p)` = with the soft prompt. Other tasks: k-shot, "
               "without the prompt (the paper's rule). Norm. Avg. = mean over the suite tasks, change from base in "
               "brackets. Format specialization = share of suite answers in the tuned task's output space.")
    out.append("")
    return "\n".join(out)


def plot(results: dict, out_dir: Path, k: int | None = None) -> list[Path]:
    """tradeoff.png (tuned-task score vs Norm. Avg.), tasks.png (per-task bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    k = k if k is not None else results["shots"][-1]
    key = str(k)
    res = results["methods"]
    methods = list(res)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m in methods:
        t = (res[m].get("tuned") or {}).get("score")
        a = res[m]["norm_avg"].get(key)
        if t is None or a is None:
            continue
        ax.scatter([t], [a], s=60)
        ax.annotate(m, (t, a), textcoords="offset points", xytext=(6, 4))
    name = (res[methods[0]].get("tuned") or {}).get("name", "tuned task")
    ax.set_xlabel(f"{name} score (tuned task)")
    ax.set_ylabel(f"Norm. Avg. ({k}-shot, other tasks)")
    ax.set_title("What fine-tuning gained vs what it kept")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / "tradeoff.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    tasks = [t for t in res[methods[0]]["tasks"] if key in res[methods[0]]["tasks"][t]["scores"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(tasks) * max(1, len(methods)) / 2.5), 4.5))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        vals = [res[m]["tasks"].get(t, {}).get("scores", {}).get(key) or 0.0 for t in tasks]
        ax.bar([x + i * width for x in range(len(tasks))], vals, width=width, label=m)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=35, ha="right")
    ax.set_ylabel(f"score ({k}-shot)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    p = out_dir / "tasks.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)
    return paths
