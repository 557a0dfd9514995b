"""Write a comparison report: report.md, metrics.json, predictions.csv and the PNG plots (eval.plots).

Input is the JSON-ready ``results`` dict eval.compare builds (see ``write_report``) plus the long per-item
predictions table; this module only formats, it computes nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vlm_judge import metrics as M

from . import sbs_stats as S
from .formatting import num, pct, table, with_ci, write_json
from .plots import COMPARISON_PLOTS, write_comparison_plots

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




# ---------------------------------------------------------------------------------------------- markdown


def render_markdown(results: dict[str, Any]) -> str:
    judges: dict[str, Any] = results["judges"]
    data = results["dataset"]
    lines = [f"# Defect-judge comparison: {results['name']}", ""]
    lines += [
        f"- dataset: `{data['path']}` (fingerprint `{str(data.get('fingerprint', ''))[:16]}`)",
        f"- {data['guard']}",
        f"- evaluated split: **{data['split']}** — {data['n_images']} images ({data['n_defective']} defective, "
        f"{pct(data['n_defective'] / data['n_images'] if data['n_images'] else math.nan)}), "
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
                pct(fail["failure_rate"]),
                str(fail["n_cached"]),
            ]
        )
    if rows:
        lines += [
            table(["judge", "model", "mode", "endpoint", "scored", "failure rate", "from cache"], rows),
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
                + [with_ci(q["metrics"].get(key), q["ci"].get(key)) for key, _, _ in QUALITY_COLUMNS]
            )
        lines += [table(["judge", "n"] + [title for _, title, _ in QUALITY_COLUMNS], rows), ""]

        kinds = sorted(
            {k for j in scored.values() for k in j["quality"]["metrics"] if k.startswith(PER_DEFECT_PREFIX)}
        )
        if kinds:
            lines += ["### ROC-AUC per defect type (images of that type vs clean images)", ""]
            rows = [
                [name] + [with_ci(j["quality"]["metrics"].get(k), j["quality"]["ci"].get(k)) for k in kinds]
                for name, j in scored.items()
            ]
            lines += [table(["judge"] + [k.removeprefix(PER_DEFECT_PREFIX) for k in kinds], rows), ""]

        lines += ["### At threshold 0.5 and at the validation threshold", ""]
        rows = []
        for name, judge in scored.items():
            q = judge["quality"]
            for suffix, thr in (("@0.5", 0.5), ("@val", q["threshold_val"])):
                cm = q["confusion" + suffix]
                rows.append(
                    [name, num(thr)]
                    + [
                        with_ci(q["metrics"].get(m + suffix), q["ci"].get(m + suffix))
                        for m in THRESHOLD_COLUMNS
                    ]
                    + [f"{cm['tp']}/{cm['fp']}/{cm['fn']}/{cm['tn']}"]
                )
        lines += [
            table(["judge", "threshold"] + THRESHOLD_COLUMNS + ["TP/FP/FN/TN"], rows),
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
                    num(lat["latency_mean_ms"], 1),
                    num(lat["latency_p50_ms"], 1),
                    num(lat["latency_p95_ms"], 1),
                    pct(fail["failure_rate"]),
                    "; ".join(f"{n}× {err}" for err, n in fail["errors"].items()) or "–",
                ]
            )
        lines += [
            table(["judge", "mean ms", "p50 ms", "p95 ms", "failure rate", "errors by kind"], rows),
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
            lines += [f"![{title}]({COMPARISON_PLOTS[key]})", ""]

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
                with_ci(s["macro_accuracy"], s["macro_accuracy_ci"]),
                num(s["strict_macro_accuracy"]),
                str(s["n_judge_significant_opposite"]),
                num(s["direction_agreement_all"]),
                with_ci(pw["accuracy"], pw["ci"]) + f" (n={pw['n_pairs']})",
            ]
        )
    lines += [
        table(
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
                    num(pair["assessors_mean_diff"]),
                    num(pair["assessors_p_value"], 4),
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
                    else f"{_verdict(pair['judge_winner'], pair['judge_significant'])} (p={num(pair['judge_p_value'], 4)})"
                )
        lines += [
            "### Per pair (winner = less defective system; * = significant)",
            "",
            table(
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
    plots = write_comparison_plots(predictions[predictions["evaluated"]], output, judges)
    results = {**results, "plots": plots}
    write_json(output / "metrics.json", results)
    (output / "report.md").write_text(render_markdown(results), encoding="utf-8")
    paths = {
        "report": output / "report.md",
        "metrics": output / "metrics.json",
        "predictions": output / "predictions.csv",
    }
    paths.update({key: output / name for key, name in plots.items()})
    return paths
