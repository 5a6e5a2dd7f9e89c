"""Pictures people would rather look at than tables: PNG bytes from plain rows, rendered
headless (matplotlib's Agg backend through `Figure`, no pyplot, no global state).

- `training_curves_png`: loss and learning rate per step of one training run (every trainer's
  checkpoint folder carries one as training_curves.png; MLflow gets it as an artifact).
- `bars_png`: one bar per row with optional error bars (the ablation table, caption
  statistics).
"""

from __future__ import annotations

import io
from collections.abc import Sequence


def figure(width: float = 6, height: float = 4):
    """A new headless figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def training_curves_png(history: Sequence[dict], title: str = "training") -> bytes:
    """Every loss-like metric (names containing "loss") per step on the left axis, the
    learning rate (`lr`) on the right; rows are {"step": s, metric: value, ...}."""
    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    rows = [r for r in history if "step" in r]
    losses = sorted({k for r in rows for k in r if "loss" in k})
    for name in losses:
        points = [(r["step"], r[name]) for r in rows if name in r]
        ax.plot([s for s, _ in points], [v for _, v in points], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    lr = [(r["step"], r["lr"]) for r in rows if "lr" in r]
    handles, labels = ax.get_legend_handles_labels()
    if lr:
        right = ax.twinx()
        (line,) = right.plot(
            [s for s, _ in lr], [v for _, v in lr], color="grey", linestyle="--", label="lr"
        )
        right.set_ylabel("learning rate")
        handles, labels = handles + [line], labels + ["lr"]
    if handles:
        ax.legend(handles, labels, loc="upper right")
    ax.set_title(title)
    return png_bytes(fig)


def bars_png(
    rows: Sequence[dict], label: str, metric: str, std: str | None = None, title: str = ""
) -> bytes:
    """One bar per row (`label` under it, height `metric`, error bar `std` when given)."""
    fig = figure(max(4.0, 0.9 * len(rows) + 1.5), 3.8)
    ax = fig.add_subplot()
    names = [str(r[label]) for r in rows]
    values = [float(r[metric]) for r in rows]
    errors = [float(r.get(std, 0.0)) for r in rows] if std else None
    ax.bar(range(len(rows)), values, yerr=errors, capsize=4 if errors else 0, color="#4c72b0")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(True, axis="y", alpha=0.3)
    return png_bytes(fig)
