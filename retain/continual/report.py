"""results.json, results.md, a heatmap of R and a line plot of the average per stage."""

from __future__ import annotations

from pathlib import Path

from retain.artifacts import write_json, write_text


def _fmt(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci) -> str:
    return f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""


def _summary_lines(s: dict) -> list[str]:
    """Last, Avg, BWT, FWT, forgetting (docs/CONTINUAL.md), with their standard error or paired 95% interval."""
    return ["", f"* Last (final average): **{_fmt(s['final_average'], 2)}**" + (f" ± {_fmt(s.get('last_se'), 2)}" if s.get("last_se") is not None else ""),
            f"* Avg (mean of the averages per stage): **{_fmt(s.get('avg'), 2)}**" + (f" ± {_fmt(s.get('avg_se'), 2)}" if s.get("avg_se") is not None else ""),
            f"* BWT: **{_fmt(s['bwt'], 2)}**{_ci(s.get('bwt_ci'))}" + (" (one stage: not defined)" if s["bwt"] is None else ""),
            f"* FWT: **{_fmt(s.get('fwt'), 2)}**{_ci(s.get('fwt_ci'))}" + (" (needs a task scored by the base and before it was learnt)" if s.get("fwt") is None else ""),
            f"* forgetting: **{_fmt(s['forgetting'], 2)}**"]


def general_lines(g: dict | None) -> list[str]:
    """The deployed system on the general suite after each stage, and its change from the base model."""
    if not g or not g.get("stages"):
        return []
    base = g["base"]
    k = str(g["stages"][-1]["shots"])
    b = base["norm_avg_summary"][k] if base else None
    lines = ["", f"General ability: the deployed system on the general suite `{g['suite']}` ({k}-shot, Norm. Avg. ± SE), "
             "its change from the base model (paired bootstrap, 95% interval; TRACE's general-ability delta) and the "
             "share of the suite's prompts the switch sent to the base model.", "",
             f"Base model: {_fmt(b and b['score'], 2)} ± {_fmt(b and b['se'], 2)}.", "",
             "| after | Norm. Avg. ± SE | change from the base [95% CI] | to the base (%) |", "|---|---|---|---|"]
    for r in g["stages"]:
        d = r["delta"] or {}
        lines.append(f"| {r['stage']} | {_fmt(r['norm_avg'], 2)} ± {_fmt(r['se'], 2)} | {d.get('diff', 0):+.2f}{_ci(d.get('ci'))}"
                     f"{' (excludes 0)' if d.get('significant') else ''} | {_fmt(r.get('routed_to_base'))} |")
    return lines


def write_results(root: Path, results: dict, *, title: str | None = None) -> None:
    root = Path(root)
    write_json(root / "results.json", results)
    write_text(root / "results.md", markdown(results, title=title))
    plot_matrix(results, root / "R.png")
    plot_average(results, root / "average.png")


def markdown(res: dict, *, title: str | None = None) -> str:
    tasks, s = res["tasks"], res["summary"]
    lines = [f"# {title or 'Continual instruction tuning: ' + res['method']}", ""]
    lines += [f"Base model `{res['model']}`, method **{res['method']}**, tasks in order: {', '.join(tasks)}; "
              f"{res['config']['max_steps']} steps per task, batch {res['config']['batch_size']}, "
              f"{res['config']['eval_samples']} validation items per task.", ""]
    lines += ["Metrics: " + ", ".join(f"{t} {m}" for t, m in zip(tasks, res["metrics"])) + ".", ""]
    lines += ["R[i][j]: score on task j (column) after stage i (row), ± its standard error over the validation items "
              "(closed form for per-item metrics, bootstrap for corpus ones).", ""]
    lines += matrix_lines(res)
    lines += _summary_lines(s)
    cons = res.get("constraint")
    if cons:
        for name, values in cons.items():
            lines.append(f"* {name}: outputs meeting the constraint after each stage (%): " + ", ".join(_fmt(v) for v in values))
    lines += routing_lines(res.get("routing"))
    lines += general_lines(res.get("general"))
    if res.get("command"):
        lines += ["", "Command:", "", "```", res["command"], "```"]
    lines += ["", f"Wall time: {res.get('wall_time_s', 0):.0f} s.", ""]
    return "\n".join(lines)


def matrix_lines(res: dict) -> list[str]:
    """R as a table: a row per stage, a column per task (± its SE), and the average per stage."""
    tasks, R = res["tasks"], res["R"]
    lines = ["| after \\ task | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    R_se = res.get("R_se") or [[None] * len(row) for row in R]
    for name, row, se_row, avg in zip(res["stages"], R, R_se, res["summary"]["average_per_stage"]):
        cells = [_fmt(x) + (f" ± {_fmt(e)}" if x is not None and e is not None else "") for x, e in zip(row, se_row)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(avg)} |")
    return lines


def routing_lines(routing: list | None) -> list[str]:
    if not routing:
        return []
    labels = ["base" if x is None else x for x in routing[-1]["labels"]]
    general = [r.get("general_accuracy") for r in routing]
    lines = ["* routing accuracy per stage, tasks' inputs (%): " + ", ".join(_fmt(r["accuracy"]) for r in routing)]
    if any(x is not None for x in general):
        lines.append("* routing accuracy per stage, held-out general inputs sent to the base model (%): "
                     + ", ".join(_fmt(x) for x in general) + f" (n = {routing[-1].get('n_general')})")
    lines += ["", "Final routing confusion (rows: true task, columns: routed to; base: the general class):", "",
              "| true \\ routed | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, row in zip(routing[-1]["rows"], routing[-1]["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def plot_matrix(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    R = np.array([[np.nan if x is None else x for x in row] for row in res["R"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(res["tasks"]), 1.2 + 0.7 * len(res["stages"])))
    im = ax.imshow(R, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(res["tasks"])), res["tasks"])
    ax.set_yticks(range(len(res["stages"])), [f"after {s}" for s in res["stages"]])
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            if not np.isnan(R[i, j]):
                ax.text(j, i, f"{R[i, j]:.1f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_title(f"{res['method']}: R[i][j]")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_average(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    plot_average_on(ax, res)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_average_on(ax, res: dict, label: str | None = None) -> None:
    avg = res["summary"]["average_per_stage"]
    xs = list(range(1, len(avg) + 1)) if len(avg) > 1 else [len(res["tasks"])]
    ax.plot(xs, avg, marker="o", label=label or res["method"])
    ax.set_xlabel("tasks learnt")
    ax.set_ylabel("average score over tasks seen")
    ax.set_xticks(range(1, len(res["tasks"]) + 1))
