"""Tables and plots of the analyses: the format curve (``retain analyze format-curve``) and the gradient
cosines (``retain analyze gradients``). ``results["methods"][METHOD]`` is a list of points (``curve.point``,
``gradients.GradientProbe``), in step order."""

from __future__ import annotations

from pathlib import Path

from retain.analysis.gradients import GROUPS


def _pm(v, se, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def curve_table(results: dict, key: str) -> str:
    lines = ["| method | step | stage (step) | tuned ± SE | Norm. Avg. ± SE | format rate (%) ± SE | n (format) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for method, points in results["methods"].items():
        for p in points:
            t, a, f = p["tuned"] or {}, p["norm_avg"].get(key) or {}, p["format_rate"].get(key) or {}
            lines.append(f"| {method} | {p['step']} | {p['stage']} ({p['stage_step']}) | {_pm(t.get('score'), t.get('se'))} | "
                         f"{_pm(a.get('score'), a.get('se'))} | {_pm(f.get('rate'), f.get('se'))} | {f.get('n', 0)} |")
    return "\n".join(lines)


def gradient_table(results: dict) -> str:
    lines = ["| method | step | stage (step) | " + " | ".join(GROUPS) + " |", "|---|---:|---|" + "---:|" * len(GROUPS)]
    for method, points in results["methods"].items():
        for p in points:
            cells = [_pm(p["cosine"][g]["cosine"], p["cosine"][g]["se"], 3) for g in GROUPS]
            lines.append(f"| {method} | {p['step']} | {p['stage']} ({p['stage_step']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _axes(n: int, width: float = 5.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _lines(ax, results: dict, value) -> None:
    """One line per method with ± SE bars; ``value(point) -> (y, se)``; a dotted line at step 0 where a
    method has stages before its last one (ProMoT's stage 2 starts there)."""
    for i, (method, points) in enumerate(results["methods"].items()):
        pts = [(p["step"], *value(p)) for p in points]
        pts = [(x, y, e) for x, y, e in pts if y is not None]
        if pts:
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=[e or 0.0 for e in es], fmt="-o", ms=3, capsize=2, color=f"C{i % 10}", label=method)
    if any(p["step"] < 0 for points in results["methods"].values() for p in points):
        ax.axvline(0, color="grey", ls=":", lw=1)
    ax.grid(alpha=0.3)


def plot_curve(results: dict, path: Path, key: str) -> Path:
    """Format rate, Norm. Avg. and tuned-task score against the step, every method on the same axes."""
    plt, fig, (a, b, c) = _axes(3)
    _lines(a, results, lambda p: (p["format_rate"][key]["rate"], p["format_rate"][key]["se"]))
    a.set_ylabel(f"format-specialization rate (%, {key}-shot)")
    _lines(b, results, lambda p: ((p["norm_avg"][key] or {}).get("score"), (p["norm_avg"][key] or {}).get("se")))
    b.set_ylabel(f"Norm. Avg. ({key}-shot, other tasks)")
    _lines(c, results, lambda p: ((p["tuned"] or {}).get("score"), (p["tuned"] or {}).get("se")))
    c.set_ylabel(f"{results.get('tuned_task', 'tuned task')} score")
    for ax in (a, b, c):
        ax.set_xlabel("step (last stage from 0; earlier stages before 0)")
    a.legend(fontsize=8)
    fig.suptitle("Format specialization during training (± SE)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gradients(results: dict, path: Path) -> Path:
    """One panel per group (Q, K, V, MLP, block, overall): the cosine against the step, a line per method."""
    plt, fig, axes = _axes(len(GROUPS), 4.2)
    for ax, g in zip(axes, GROUPS):
        _lines(ax, results, lambda p, g=g: (p["cosine"][g]["cosine"], p["cosine"][g]["se"]))
        ax.set_title(g if g in ("block", "overall") else f"last block: {g.upper()}")
        ax.set_xlabel("model-tuning step")
        ax.set_ylabel("cos(real, shuffled labels)")
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=8)
    fig.suptitle("Gradient on the real task vs on shuffled labels (mean ± SE over probe batches)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
