"""Each method's trade-off frontier over a sweep (``retain compare --sweep``): tuned-task score against
Norm. Avg., one point per swept value, with the standard errors and the paired intervals of the comparison.

``results["frontier"]``::

    {"fields": ["lr"], "values": ["1e-5", ...], "base": {"4": POINT} | None,
     "methods": {"full": {"4": [POINT per value, in sweep order]}, ...}}

    POINT = {"name", "value", "tuned": {"score", "se", "n"}, "norm_avg": {"score", "se"}, "format_rate",
             "vs_base": {"tuned": {"diff", "ci"} | None, "norm_avg": {"diff", "ci"} | None}}
"""

from __future__ import annotations

from pathlib import Path

from retain.artifacts import write_text
from retain.evaluation.paired import comparison_key
from retain.evaluation.report import _avg_summary, _tuned_summary


def _point(results: dict, name: str, value, key: str) -> dict:
    ev = results["methods"][name]
    t, a = _tuned_summary(ev.get("tuned")) or {}, _avg_summary(ev, key) or {}
    pair = ((results.get("paired") or {}).get(key) or {}).get(comparison_key("base", name)) or {}
    diff = lambda p: None if not p else {"diff": p["diff"], "ci": p["ci"]}
    return {"name": name, "value": value, "tuned": {"score": t.get("score"), "se": t.get("se"), "n": t.get("n")},
            "norm_avg": {"score": a.get("score"), "se": a.get("se")}, "format_rate": (ev.get("format_rate") or {}).get(key),
            "vs_base": {"tuned": diff(pair.get("tuned")), "norm_avg": diff(pair.get("norm_avg"))}}


def frontier(results: dict, fields, values) -> dict:
    """Every swept method's points (names ``METHOD@FIELD=V``), per shot count, in sweep order."""
    spec = "+".join(fields)
    shots = [str(k) for k in results["shots"]]
    methods: dict = {}
    for name in results["methods"]:
        method, _, rest = name.partition("@")
        if rest.startswith(spec + "="):
            methods.setdefault(method, {})
    for method, per_k in methods.items():
        for key in shots:
            per_k[key] = [_point(results, f"{method}@{spec}={v}", v, key) for v in values
                          if f"{method}@{spec}={v}" in results["methods"]]
    base = {key: _point(results, "base", None, key) for key in shots} if "base" in results["methods"] else None
    return {"fields": list(fields), "values": list(values), "base": base, "methods": methods}


def _pm(s: dict) -> str:
    if s.get("score") is None:
        return "-"
    return f"{s['score']:.2f}" + (f" ± {s['se']:.2f}" if s.get("se") is not None else "")


def _ci(d: dict | None) -> str:
    return "-" if not d else f"{d['diff']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def frontier_table(front: dict, key: str) -> str:
    """Markdown: one row per (method, value): tuned ± SE, Norm. Avg. ± SE, format rate, both changes from base
    with their 95% paired intervals."""
    spec = "+".join(front["fields"])
    lines = [f"| method | {spec} | tuned ± SE | Norm. Avg. ± SE | format rate (%) | tuned − base [95%] | "
             "Norm. Avg. − base [95%] |", "|---|---|---:|---:|---:|---:|---:|"]
    rows = ([("base", front["base"][key])] if front.get("base") else []) + \
           [(m, p) for m, per_k in front["methods"].items() for p in per_k.get(key, [])]
    for method, p in rows:
        rate = "-" if p["format_rate"] is None else f"{p['format_rate']:.2f}"
        lines.append(f"| {method} | {'' if p['value'] is None else p['value']} | {_pm(p['tuned'])} | {_pm(p['norm_avg'])} | "
                     f"{rate} | {_ci(p['vs_base']['tuned'])} | {_ci(p['vs_base']['norm_avg'])} |")
    return "\n".join(lines)


def plot_frontier(front: dict, path: Path, key: str, tuned_name: str = "tuned task") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for i, (method, per_k) in enumerate(front["methods"].items()):
        pts = [p for p in per_k.get(key, []) if p["tuned"]["score"] is not None and p["norm_avg"]["score"] is not None]
        if not pts:
            continue
        xs, ys = [p["tuned"]["score"] for p in pts], [p["norm_avg"]["score"] for p in pts]
        ax.errorbar(xs, ys, xerr=[p["tuned"]["se"] or 0.0 for p in pts], yerr=[p["norm_avg"]["se"] or 0.0 for p in pts],
                    fmt="-o", ms=5, capsize=3, color=f"C{i % 10}", label=method)
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(p["value"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    b = (front.get("base") or {}).get(key)
    if b and b["tuned"]["score"] is not None and b["norm_avg"]["score"] is not None:
        ax.errorbar([b["tuned"]["score"]], [b["norm_avg"]["score"]], xerr=[b["tuned"]["se"] or 0.0],
                    yerr=[b["norm_avg"]["se"] or 0.0], fmt="*", ms=12, color="black", capsize=3, label="base")
    ax.set_xlabel(f"{tuned_name} score (tuned task, ± SE)")
    ax.set_ylabel(f"Norm. Avg. ({key}-shot, other tasks, ± SE)")
    ax.set_title(f"Frontier over {'+'.join(front['fields'])}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_frontier(results: dict, root: Path, fields, values) -> None:
    """``results["frontier"]``, ``frontier.md`` (one table per shot count) and ``frontier.png`` (the last shot count)."""
    front = results["frontier"] = frontier(results, fields, values)
    parts = [f"# Frontier over {'+'.join(fields)} = {', '.join(values)}\n",
             "Each method trained at every value with the same budget otherwise; tuned task and suite as in results.md. "
             "Intervals: 95% paired bootstrap against base (the same items).\n"]
    for key in [str(k) for k in results["shots"]]:
        parts += [f"## {key}-shot\n", frontier_table(front, key), ""]
    write_text(Path(root) / "frontier.md", "\n".join(parts) + "\n")
    plot_frontier(front, Path(root) / "frontier.png", str(results["shots"][-1]), results.get("tuned_task") or "tuned task")
