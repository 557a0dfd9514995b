"""The report figures (matplotlib, Agg backend): eval.compare's ROC, PR, reliability and score histograms, and
eval.sbs's score distributions and per-prompt differences. Curves come from scikit-learn and vlm_judge.metrics;
this module only draws."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlm_judge import metrics as M

from .formatting import num

COMPARISON_PLOTS = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "histograms": "histograms.png",
}
SBS_PLOTS = {"distribution": "distribution.png", "differences": "differences.png"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display anywhere this runs
    import matplotlib.pyplot as plt

    return plt


def write_comparison_plots(predictions: pd.DataFrame, output: Path, judges: list[str]) -> dict[str, str]:
    """ROC, PR, reliability diagram and per-label score histograms of the scored items, one line per judge."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import precision_recall_curve, roc_curve

    scored = predictions[predictions["p_defect"].notna()]
    parts = {name: scored[scored["judge"] == name] for name in judges}
    parts = {name: part for name, part in parts.items() if len(part)}
    if not parts:
        return {}
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in parts.items():
        y, p = part["label"].to_numpy(), part["p_defect"].to_numpy()
        with warnings.catch_warnings():  # one class only: sklearn warns and returns NaN, nothing is drawn
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        ax.plot(fpr, tpr, label=f"{name} (AUC {num(M.roc_auc(y, p))})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, output / COMPARISON_PLOTS["roc"])

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in parts.items():
        y, p = part["label"].to_numpy(), part["p_defect"].to_numpy()
        with warnings.catch_warnings():  # no positives: sklearn warns (recall set to 1)
            warnings.simplefilter("ignore", UserWarning)
            precision, recall, _ = precision_recall_curve(y, p)
        # sklearn lists the points from the highest threshold down; plotted from recall 0 with precision 1 up.
        ax.step(
            recall[::-1], precision[::-1], where="pre", label=f"{name} (AP {num(M.average_precision(y, p))})"
        )
    base = float(next(iter(parts.values()))["label"].mean())
    ax.axhline(base, ls="--", c="grey", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, output / COMPARISON_PLOTS["pr"])

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in parts.items():
        curve = M.reliability_curve(part["label"].to_numpy(), part["p_defect"].to_numpy())
        keep = curve["count"] > 0
        ax.plot(curve["mean_p"][keep], curve["defect_rate"][keep], marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="mean p_defect in bin",
        ylabel="observed defect rate",
        title=f"Reliability ({M.ECE_BINS} equal-width bins)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, output / COMPARISON_PLOTS["reliability"])

    fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, (name, part) in zip(axes[0], parts.items(), strict=True):
        for label, colour, text in ((0, "tab:green", "clean"), (1, "tab:red", "defective")):
            values = part.loc[part["label"] == label, "p_defect"]
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{text} (n={len(values)})")
        ax.set(title=name, xlabel="p_defect", ylabel="images")
        ax.legend(fontsize=8)
    _save(fig, output / COMPARISON_PLOTS["histograms"])
    return dict(COMPARISON_PLOTS)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def write_sbs_plots(scored: pd.DataFrame, results: dict[str, Any], output: Path) -> dict[str, str]:
    """p_defect distribution per system; per-prompt differences A − B per pair (sorted, with the mean)."""
    from .sbs_stats import pair_differences

    valid = scored[scored["p_defect"].notna()]
    if valid.empty:
        return {}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 21)
    for system in results["dataset"]["systems"]:
        values = valid.loc[valid["system"] == system, "p_defect"]
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            lw=1.6,
            label=f"{system} (n={len(values)}, mean {num(values.mean())})",
        )
    ax.set(xlabel="p_defect", ylabel="images", title="p_defect per system", xlim=(0, 1))
    ax.legend(fontsize=8)
    _save(fig, output / SBS_PLOTS["distribution"])

    pairs = results["pairs"]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(6, 2.4 * len(pairs)), squeeze=False)
    for ax, pair in zip(axes[:, 0], pairs, strict=True):
        d = np.sort(pair_differences(valid, "p_defect", pair["system_a"], pair["system_b"]).to_numpy())
        colours = np.where(d > 0, "tab:blue", np.where(d < 0, "tab:orange", "grey"))
        ax.bar(np.arange(d.size), d, color=colours, width=1.0)
        ax.axhline(float(d.mean()) if d.size else 0.0, color="black", lw=1, ls="--", label="mean")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(
            title=f"{pair['system_a']} − {pair['system_b']}: {pair['judge']['verdict']}",
            xlabel="prompts (sorted)",
            ylabel="Δ p_defect",
        )
        ax.legend(fontsize=8, loc="upper left")
    _save(fig, output / SBS_PLOTS["differences"])
    return dict(SBS_PLOTS)
