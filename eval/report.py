"""Write a comparison report: report.md, metrics.json, predictions.csv and PNG plots (matplotlib, Agg backend).

Input is the JSON-ready ``results`` dict eval.compare builds (see ``write_report``) plus the long per-item
predictions table; this module only formats, it computes nothing but the plot curves (scikit-learn's ROC and PR
curves, the reliability bins of vlm_judge.metrics).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlm_judge import metrics as M

from . import sbs as S

PLOTS = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "histograms": "histograms.png",
}

# (key in metrics, column title, lower is better)
QUALITY_COLUMNS = [
    ("roc_auc", "ROC-AUC", False),
    ("pr_auc", "PR-AUC", False),
    ("accuracy@0.5", "Acc@0.5", False),
    ("accuracy@val", "Acc@val", False),
    ("balanced_accuracy@val", "BalAcc@val", False),
    ("f1@val", "F1@val", False),
    ("brier", "Brier", True),
    ("ece", "ECE", True),
    ("rmse_soft", "RMSE(soft)", True),
]
THRESHOLD_COLUMNS = ["accuracy", "precision", "recall", "f1", "balanced_accuracy"]
PER_DEFECT_PREFIX = "roc_auc_"  # roc_auc_<defect type> in a judge's quality metrics


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _with_ci(value: Any, ci: Any) -> str:
    text = _num(value)
    if text == "–" or not ci or any(v is None or not math.isfinite(v) for v in ci):
        return text
    return f"{text} [{_num(ci[0])}, {_num(ci[1])}]"


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * float(value):.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    escape = [[str(cell).replace("|", "\\|") for cell in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, tuples -> lists, Paths -> str (json.dump with allow_nan=False)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------- markdown


def render_markdown(results: dict[str, Any]) -> str:
    judges: dict[str, Any] = results["judges"]
    data = results["dataset"]
    lines = [f"# Defect-judge comparison: {results['name']}", ""]
    lines += [
        f"- dataset: `{data['path']}` (fingerprint `{str(data.get('fingerprint', ''))[:16]}`)",
        f"- {data['guard']}",
        f"- evaluated split: **{data['split']}** — {data['n_images']} images ({data['n_defective']} defective, "
        f"{_pct(data['n_defective'] / data['n_images'] if data['n_images'] else math.nan)}), "
        f"{data['n_prompts']} prompts, {data['n_systems']} systems"
        + (f" (limited to {data['limit']} images per split, whole prompts)" if data.get("limit") else ""),
        f"- threshold split: {data['threshold_split']} ({data['n_threshold_images']} images)",
        f"- generated {results['generated_at']} by `{results['command']}`",
        "",
    ]

    lines += ["## Judges", ""]
    rows = []
    for name, judge in judges.items():
        info = judge["judge"]
        fail = judge["failures"]
        rows.append(
            [
                name,
                f"`{info['model']}`",
                info["mode"],
                info["base_url"],
                f"{fail['n_scored']}/{fail['n_items']}",
                _pct(fail["failure_rate"]),
                str(fail["n_cached"]),
            ]
        )
    if rows:
        lines += [
            _table(["judge", "model", "mode", "endpoint", "scored", "failure rate", "from cache"], rows),
            "",
        ]
    else:
        lines += ["No judge produced scores.", ""]
    if results["skipped"]:
        lines += ["### Skipped judges", ""]
        lines += [f"- **{s['name']}** (`{s['source']}`): {s['reason']}" for s in results["skipped"]]
        lines += [""]

    scored = {n: j for n, j in judges.items() if j.get("quality")}
    if scored:
        lines += [
            f"## Quality on {_split_text(data['split'])} (95 % bootstrap CI over prompts)",
            "",
            "Each cell: value [CI low, CI high]. Failed items are left out of quality metrics (see failure rate).",
            "",
        ]
        rows = []
        for name, judge in scored.items():
            q = judge["quality"]
            rows.append(
                [name, str(q["n"])]
                + [_with_ci(q["metrics"].get(key), q["ci"].get(key)) for key, _, _ in QUALITY_COLUMNS]
            )
        lines += [_table(["judge", "n"] + [title for _, title, _ in QUALITY_COLUMNS], rows), ""]

        kinds = sorted(
            {k for j in scored.values() for k in j["quality"]["metrics"] if k.startswith(PER_DEFECT_PREFIX)}
        )
        if kinds:
            lines += ["### ROC-AUC per defect type (images of that type vs clean images)", ""]
            rows = [
                [name] + [_with_ci(j["quality"]["metrics"].get(k), j["quality"]["ci"].get(k)) for k in kinds]
                for name, j in scored.items()
            ]
            lines += [_table(["judge"] + [k.removeprefix(PER_DEFECT_PREFIX) for k in kinds], rows), ""]

        lines += ["### At threshold 0.5 and at the validation threshold", ""]
        rows = []
        for name, judge in scored.items():
            q = judge["quality"]
            for suffix, thr in (("@0.5", 0.5), ("@val", q["threshold_val"])):
                cm = q["confusion" + suffix]
                rows.append(
                    [name, _num(thr)]
                    + [
                        _with_ci(q["metrics"].get(m + suffix), q["ci"].get(m + suffix))
                        for m in THRESHOLD_COLUMNS
                    ]
                    + [f"{cm['tp']}/{cm['fp']}/{cm['fn']}/{cm['tn']}"]
                )
        lines += [
            _table(["judge", "threshold"] + THRESHOLD_COLUMNS + ["TP/FP/FN/TN"], rows),
            "",
            *[
                f"- {name}: validation threshold {judge['quality']['threshold_note']}"
                for name, judge in scored.items()
            ],
            "",
        ]

        lines += ["### Latency and failures", ""]
        rows = []
        for name, judge in scored.items():
            lat, fail = judge["latency"], judge["failures"]
            rows.append(
                [
                    name,
                    _num(lat["latency_mean_ms"], 1),
                    _num(lat["latency_p50_ms"], 1),
                    _num(lat["latency_p95_ms"], 1),
                    _pct(fail["failure_rate"]),
                    "; ".join(f"{n}× {err}" for err, n in fail["errors"].items()) or "–",
                ]
            )
        lines += [
            _table(["judge", "mean ms", "p50 ms", "p95 ms", "failure rate", "errors by kind"], rows),
            "",
        ]

        lines += _sbs_markdown(scored, data)

        lines += ["## Plots", ""]
        for key, title in (
            ("roc", "ROC"),
            ("pr", "Precision-recall"),
            ("reliability", "Reliability diagram"),
            ("histograms", "Score histograms by label"),
        ):
            lines += [f"![{title}]({PLOTS[key]})", ""]

    lines += ["## Definitions", ""]
    lines += [f"- {text}" for text in results["definitions"].values()]
    lines += [""]
    return "\n".join(lines)


def _sbs_markdown(scored: dict[str, Any], data: dict[str, Any]) -> list[str]:
    first = next(iter(scored.values()))["sbs"]
    lines = [
        "## SbS agreement with the assessors",
        "",
        f"Pairs of systems over their shared prompts of {_split_text(data['split'])}. Assessors' verdict from the "
        f"per-prompt {first['assessor_score']}; significance: {first['test']}, α = {first['alpha']}, "
        f"multiple-comparison correction: {first['correction']}. Macro-accuracy = share of assessor-significant "
        "pairs where the judge names the same less-defective system (95 % Wilson CI); strict = the judge is also "
        "significant. Pairwise accuracy = same-prompt image pairs with different labels ranked right (ties ½).",
        "",
    ]
    rows = []
    for name, judge in scored.items():
        s, pw = judge["sbs"]["summary"], judge["sbs"]["pairwise"]
        rows.append(
            [
                name,
                str(s["n_pairs"]),
                str(s["n_assessor_significant"]),
                _with_ci(s["macro_accuracy"], s["macro_accuracy_ci"]),
                _num(s["strict_macro_accuracy"]),
                str(s["n_judge_significant_opposite"]),
                _num(s["direction_agreement_all"]),
                _with_ci(pw["accuracy"], pw["ci"]) + f" (n={pw['n_pairs']})",
            ]
        )
    lines += [
        _table(
            [
                "judge",
                "SbS pairs",
                "assessor-significant",
                "macro-accuracy",
                "strict",
                "judge significant, opposite",
                "direction agreement (all pairs)",
                "pairwise accuracy",
            ],
            rows,
        ),
        "",
    ]
    if first["summary"]["n_assessor_significant"] == 0:
        lines += [
            "No pair of systems differs significantly by the assessors on these prompts, so macro-accuracy is "
            "undefined (–). More shared prompts per pair are needed: e.g. the exact sign test needs at least 6 "
            "prompts that all point the same way to reach p < 0.05.",
            "",
        ]
    # One row per system pair: the assessors, then each judge's verdict (* = significant).
    pair_rows: dict[tuple[str, str], list[str]] = {}
    for judge in scored.values():
        for pair in judge["sbs"]["pairs"]:
            key = (pair["system_a"], pair["system_b"])
            if key not in pair_rows:
                pair_rows[key] = [
                    f"{key[0]} vs {key[1]}",
                    str(pair["assessors_n"]),
                    _num(pair["assessors_mean_diff"]),
                    _num(pair["assessors_p_value"], 4),
                    _verdict(pair["assessors_winner"], pair["assessors_significant"]),
                ]
    if pair_rows:
        for judge in scored.values():
            by_pair = {(p["system_a"], p["system_b"]): p for p in judge["sbs"]["pairs"]}
            for key, row in pair_rows.items():
                pair = by_pair.get(key)
                row.append(
                    "–"
                    if pair is None
                    else f"{_verdict(pair['judge_winner'], pair['judge_significant'])} (p={_num(pair['judge_p_value'], 4)})"
                )
        lines += [
            "### Per pair (winner = less defective system; * = significant)",
            "",
            _table(
                ["pair", "prompts", "assessor Δ (A−B)", "assessor p", "assessors"] + list(scored),
                list(pair_rows.values()),
            ),
            "",
        ]
    return lines


def _split_text(split: str) -> str:
    return "all splits" if split == "all" else f"the {split} split"


def _verdict(winner: str | None, significant: bool) -> str:
    if winner is None:
        return "tie"
    return f"{winner}{'*' if significant else ''}"


# ---------------------------------------------------------------------------------------------- plots


def write_plots(predictions: pd.DataFrame, output: Path, judges: list[str]) -> dict[str, str]:
    """ROC, PR, reliability diagram and per-label score histograms of the scored items, one line per judge."""
    import matplotlib

    matplotlib.use("Agg")  # no display anywhere this runs
    import matplotlib.pyplot as plt
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import precision_recall_curve, roc_curve

    scored = predictions[predictions["p_defect"].notna()]
    parts = {name: scored[scored["judge"] == name] for name in judges}
    parts = {name: part for name, part in parts.items() if len(part)}
    if not parts:
        return {}

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in parts.items():
        y, p = part["label"].to_numpy(), part["p_defect"].to_numpy()
        with warnings.catch_warnings():  # one class only: sklearn warns and returns NaN, nothing is drawn
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        ax.plot(fpr, tpr, label=f"{name} (AUC {_num(M.roc_auc(y, p))})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, output / PLOTS["roc"])

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in parts.items():
        y, p = part["label"].to_numpy(), part["p_defect"].to_numpy()
        with warnings.catch_warnings():  # no positives: sklearn warns (recall set to 1)
            warnings.simplefilter("ignore", UserWarning)
            precision, recall, _ = precision_recall_curve(y, p)
        # sklearn lists the points from the highest threshold down; plotted from recall 0 with precision 1 up.
        ax.step(
            recall[::-1], precision[::-1], where="pre", label=f"{name} (AP {_num(M.average_precision(y, p))})"
        )
    base = float(next(iter(parts.values()))["label"].mean())
    ax.axhline(base, ls="--", c="grey", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, output / PLOTS["pr"])

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
    _save(fig, output / PLOTS["reliability"])

    fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, (name, part) in zip(axes[0], parts.items(), strict=True):
        for label, colour, text in ((0, "tab:green", "clean"), (1, "tab:red", "defective")):
            values = part.loc[part["label"] == label, "p_defect"]
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{text} (n={len(values)})")
        ax.set(title=name, xlabel="p_defect", ylabel="images")
        ax.legend(fontsize=8)
    _save(fig, output / PLOTS["histograms"])
    return dict(PLOTS)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- all files


def definitions(alpha: float, correction: str) -> dict[str, str]:
    return {
        "threshold": f"'@val' metrics use the threshold that {M.THRESHOLD_RULE}; '@0.5' use p_defect >= 0.5.",
        "pr_auc": "PR-AUC = average precision (step-wise, no interpolation).",
        "ece": f"ECE over {M.ECE_BINS} equal-width bins of p_defect: count-weighted |mean p − defect rate|.",
        "rmse": "RMSE(soft) = root mean squared error of p_defect against the assessors' vote share.",
        "ci": "95 % CIs: percentile bootstrap, resampling whole prompts; the threshold is held fixed.",
        "failures": "Failure rate = items without a score / items; failed items are excluded from quality metrics.",
        "latency": "Latency over scored requests as measured by the client (retries included); cached items keep "
        "the latency of the run that scored them.",
        "sbs": f"SbS: {S.TEST_NAME}, α = {alpha}, correction: {correction}; verdict = lower mean defect score.",
    }


def write_report(results: dict[str, Any], predictions: pd.DataFrame, output: str | Path) -> dict[str, Path]:
    """Write report.md, metrics.json, predictions.csv and the plots into ``output``; return their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(output / "predictions.csv", index=False)
    judges = [name for name, judge in results["judges"].items() if judge.get("quality")]
    plots = write_plots(predictions[predictions["evaluated"]], output, judges)
    results = {**results, "plots": plots}
    (output / "metrics.json").write_text(
        json.dumps(jsonable(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    (output / "report.md").write_text(render_markdown(results), encoding="utf-8")
    paths = {
        "report": output / "report.md",
        "metrics": output / "metrics.json",
        "predictions": output / "predictions.csv",
    }
    paths.update({key: output / name for key, name in plots.items()})
    return paths
