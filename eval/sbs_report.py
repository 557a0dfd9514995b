"""Write the label-free SbS report of ``python -m eval.sbs``: sbs.md, sbs.json, scores.csv and two plots.

Input is the JSON-ready ``results`` dict eval.sbs builds plus the scored rows; this module only formats.
sbs.md puts the verdicts first (one line per pair, readable in ten seconds), then what the next SbS needs
(prompts for 80 % power, minimum detectable effect), the systems, score drift against the baseline, the data
guard and the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .formatting import num, pct, table, write_json
from .plots import write_sbs_plots

SCORE_COLUMNS = ["image", "system", "prompt_id", "p_defect", "error", "method"]


def _signed(value: Any, digits: int = 4) -> str:
    text = num(value, digits)
    return text if text == "–" or text.startswith("-") else f"+{text}"


def _p(value: Any) -> str:
    return "<0.0001" if isinstance(value, float) and 0 <= value < 1e-4 else num(value, 4)


def _count(value: int | None, none: str) -> str:
    return none if value is None else f"{value:,}"


def agreement_text(pairs: list[dict[str, Any]]) -> str:
    """How often the judge's verdict is the assessors', counted apart for the pairs the assessors call
    significant (the ones an SbS decides on) and the ones they call a tie."""
    significant = [p for p in pairs if p.get("assessors_significant")]
    ties = [p for p in pairs if not p.get("assessors_significant")]

    def agreed(group: list[dict[str, Any]]) -> int:
        return sum(bool(p.get("assessors_agree")) for p in group)

    parts = []
    if significant:
        parts.append(
            f"on the {len(significant)} pair{'s' if len(significant) != 1 else ''} the assessors call significant, "
            f"the judge gives the same verdict on {agreed(significant)}"
        )
    else:
        parts.append("the assessors call no pair significant")
    if ties:
        parts.append(
            f"on the {len(ties)} pair{'s' if len(ties) != 1 else ''} they do not, the judge also finds no "
            f"significant difference on {agreed(ties)}"
        )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _verdict_text(test: dict[str, Any], bold: bool = False, numbers: bool = False) -> str:
    text = test["verdict"]
    if test.get("better"):
        text = f"{text} ({test['better']})"
    if bold and test.get("better"):
        text = f"**{text}**"
    if numbers:
        text += f", Δ {_signed(test['mean_diff'], 3)}, p {_p(test['p_value'])}"
    return text


def render_markdown(results: dict[str, Any]) -> str:
    settings, data = results["settings"], results["dataset"]
    pairs, labels = results["pairs"], results["has_labels"]
    judge = results["judge"]
    lines = [
        f"# SbS by the judge `{judge['name']}` ({judge['model']})",
        "",
        f"Dataset `{data['path']}`: {data['n_images']} images of {len(data['systems'])} systems on "
        f"{data['n_prompts']} prompts. Lower p_defect = fewer defects; a verdict needs p < {settings['alpha']} "
        f"(Wilcoxon signed-rank on per-prompt differences, {settings['correction']} correction over "
        f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''}).",
        "",
    ]
    header = ["A vs B", "judge's verdict"] + (["assessors' verdict"] if labels else [])
    header += ["prompts", "mean p_defect A / B", "Δ = A − B [95 % CI]", "p"]
    rows = []
    for pair in pairs:
        ci = pair["mean_diff_ci"]
        row = [f"{pair['system_a']} vs {pair['system_b']}", _verdict_text(pair["judge"], bold=True)]
        if labels:
            row.append(_verdict_text(pair["assessors"], numbers=True))
        row += [
            str(pair["n_prompts"]),
            f"{num(pair['mean_p_defect_a'], 4)} / {num(pair['mean_p_defect_b'], 4)}",
            f"{_signed(pair['judge']['mean_diff'])} [{_signed(ci[0])}, {_signed(ci[1])}]",
            _p(pair["judge"]["p_value"]),
        ]
        rows.append(row)
    lines += ["## Verdicts", "", table(header, rows), ""]
    if labels:
        lines += [f"Assessors' verdict: the same test on the assessors' per-prompt vote share (soft label). {agreement_text(pairs)}", ""]

    threshold = settings["threshold"]
    plan = []
    for pair in pairs:
        needed = pair["prompts_for_80_power"]
        mde = pair["minimum_detectable_effect"]
        plan.append(
            [
                f"{pair['system_a']} vs {pair['system_b']}",
                f"{pair['a_wins']} / {pair['ties']} / {pair['b_wins']}",
                f"{pct(pair['defect_rate_a'])} / {pct(pair['defect_rate_b'])}",
                _count(needed, "– (no direction)"),
                "–" if pair["judge"]["significant"] or mde is None else num(mde, 4),
            ]
        )
    lines += [
        "## Planning the next SbS",
        "",
        table(
            [
                "A vs B",
                "prompts A wins / ties / B wins",
                f"defect rate A / B (p ≥ {num(threshold)})",
                "prompts for 80 % power at the observed effect",
                "min. detectable |Δ| with these prompts (non-significant pairs)",
            ],
            plan,
        ),
        "",
        f"Prompts for 80 % power: {settings['power_method']}. Minimum detectable effect: {settings['mde_method']}; "
        "– when the differences have no spread or the prompts are too few for any effect.",
        "",
    ]

    system_rows = [
        [
            name,
            str(s["n_images"]),
            str(s["n_prompts"]),
            f"{s['n_scored']} / {s['n_failed']}",
            num(s["mean_p_defect"], 4),
            pct(s["defect_rate"]),
        ]
        for name, s in results["systems"].items()
    ]
    lines += [
        "## Systems",
        "",
        table(
            [
                "system",
                "images",
                "prompts",
                "scored / failed",
                "mean p_defect",
                f"defect rate (p ≥ {num(threshold)})",
            ],
            system_rows,
        ),
        "",
        f"Threshold {num(threshold, 4)}: {settings['threshold_source']}.",
        "",
    ]

    drift = results["drift"]
    lines += ["## Score drift against the baseline", ""]
    if drift["baseline"] is None:
        lines += ["No --baseline given: no drift comparison.", ""]
    else:
        drift_rows = []
        rule = ""
        for name, d in drift["systems"].items():
            if "error" in d:
                drift_rows.append([name, d["error"], "", "", "", "", ""])
                continue
            rule = d["alert_rule"]
            drift_rows.append(
                [
                    name,
                    f"{num(d['psi'])} ({'**drift**' if d['drift'] else 'no drift'})",
                    f"{num(d['ks_statistic'])} (p={_p(d['ks_p_value'])})",
                    num(d["js_distance"]),
                    _signed(d["mean_shift"]),
                    _signed(d["quantile_shift"]["q50"]),
                    _signed(d["quantile_shift"]["q90"]),
                ]
            )
        lines += [
            f"Each system's p_defect distribution against `{drift['baseline']}` (eval.drift; {rule or 'PSI > 0.2'}).",
            "",
            table(
                ["system", "PSI", "KS", "Jensen-Shannon", "mean shift", "median shift", "q90 shift"],
                drift_rows,
            ),
            "",
        ]

    lines += [
        "## Data and judge",
        "",
        f"- {data['guard']}",
        f"- pictures judged: {data['n_pictures_judged']} for {data['n_images']} images "
        f"({len(data['shared_images'])} rows share their pixels with another row and reuse its score); "
        f"{settings['n_cached']} came from the cache `{settings['cache_dir']}`",
    ]
    lines += [f"- excluded row {e['row']} ({e['image']}): {e['reason']}" for e in data["excluded"][:10]]
    if len(data["excluded"]) > 10:
        lines.append(f"- … and {len(data['excluded']) - 10} more excluded rows (sbs.json)")
    lines += [
        f"- judge: `{judge['config']}` → {judge['base_url']}, model `{judge['model']}`, {judge['mode']} mode, "
        f"prompt {judge['prompt_version']}, config hash {judge['config_hash']}",
        f"- test: {settings['test']}; CI: {settings['ci']} ({settings['bootstrap']} replicates, seed {settings['seed']})",
        f"- plots: {', '.join(results.get('plots', {}).values()) or 'none'}",
        f"- command: `{results['command']}`",
        "",
    ]
    return "\n".join(lines)


def write_sbs_report(results: dict[str, Any], scored: pd.DataFrame, output: str | Path) -> dict[str, Path]:
    """Write scores.csv, the plots, sbs.json and sbs.md into ``output``; return their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    scored.reindex(columns=SCORE_COLUMNS).to_csv(output / "scores.csv", index=False)
    plots = write_sbs_plots(scored, results, output)
    results = {**results, "plots": plots}
    write_json(output / "sbs.json", results)
    (output / "sbs.md").write_text(render_markdown(results), encoding="utf-8")
    paths = {"report": output / "sbs.md", "json": output / "sbs.json", "scores": output / "scores.csv"}
    paths.update({key: output / name for key, name in plots.items()})
    return paths
