"""The data-scaling curve (the paper's Fig. 5 in miniature): nested subsets of a caption
source's clips, one summary row per (source, fraction) over seeds, and the plot of t2v R@1
against the number of clips."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path


def nested_subset(keys: Iterable[str], fraction: float, salt: str = "") -> list[str]:
    """The first round(fraction * N) (at least 1) of the N distinct keys, ordered by the
    sha256 of (salt, key): a fixed order per salt, so every smaller subset lies inside every
    larger one and a clip joins the curve once, at the fraction that first takes it."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction!r}")
    distinct = sorted({str(k) for k in keys})
    if not distinct:
        return []

    def rank(key: str) -> bytes:
        return hashlib.sha256(f"{salt}\0{key}".encode()).digest()

    size = max(1, round(fraction * len(distinct)))
    return sorted(distinct, key=rank)[:size]


def curve_summary(rows: Sequence[dict], metrics: Sequence[str]) -> list[dict]:
    """One row per (source, fraction), in the order first seen: clips, the number of seeds,
    and each metric's mean and sample standard deviation over the seeds (0 with one seed)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["source"], float(row["fraction"])), []).append(row)
    summary = []
    for (source, fraction), group in groups.items():
        out = {
            "source": source,
            "fraction": fraction,
            "clips": max(int(r["clips"]) for r in group),
            "seeds": len(group),
        }
        if "batch_size" in group[0]:
            out["batch_size"] = min(int(r["batch_size"]) for r in group)
        for m in metrics:
            values = [float(r["metrics"][m]) for r in group if m in r["metrics"]]
            if not values:
                continue
            mean = sum(values) / len(values)
            var = (
                sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            )
            out[m], out[f"{m}_std"] = mean, math.sqrt(var)
        summary.append(out)
    return summary


def curve_png(rows: Sequence[dict], baseline: str = "alt_text", metric: str = "t2v_R1") -> bytes:
    """PNG bytes of `metric` against clips (log x): one line per source, error bars (one
    standard deviation) where several seeds ran; the `baseline` source at its largest fraction
    as a marker and a dashed horizontal line."""
    from model_code.evaluation.plots import figure, png_bytes

    summary = curve_summary(rows, [metric])
    fig = figure(6, 4)
    ax = fig.add_subplot()
    sources = list(dict.fromkeys(r["source"] for r in summary))
    for source in sources:
        points = sorted((r for r in summary if r["source"] == source), key=lambda r: r["clips"])
        points = [r for r in points if metric in r]
        if not points:
            continue
        xs = [r["clips"] for r in points]
        ys = [r[metric] for r in points]
        errors = [r[f"{metric}_std"] for r in points]
        several = any(r["seeds"] > 1 for r in points)
        if source == baseline:
            top = points[-1]
            ax.axhline(top[metric], linestyle="--", color="grey", linewidth=1)
            ax.errorbar(
                [top["clips"]],
                [top[metric]],
                yerr=[errors[-1]] if several else None,
                marker="s",
                color="grey",
                linestyle="none",
                capsize=3,
                label=f"{source} ({top['fraction']:.0%})",
            )
            continue
        ax.errorbar(xs, ys, yerr=errors if several else None, marker="o", capsize=3, label=source)
    ax.set_xscale("log")
    ax.set_xlabel("training clips")
    label = metric.replace("_R", " R@").replace("_", " ")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs training clips")
    ax.grid(True, which="both", alpha=0.3)
    if sources:
        ax.legend()
    return png_bytes(fig)


def plot_curve(
    rows: Sequence[dict], path: str | Path, baseline: str = "alt_text", metric: str = "t2v_R1"
) -> Path:
    """Write curve_png(rows) to `path` atomically (readers never see half a PNG)."""
    from model_code.runtime.files import atomic_write_bytes

    atomic_write_bytes(path, curve_png(rows, baseline, metric))
    return Path(path)
