"""The judge as the SbS metric: compare generator versions on the same prompts, no assessors needed.

    python -m eval.sbs --dataset DIR --judge baselines/finetuned.yaml --output reports/NAME \\
        [--systems A B ...] [--baseline A] [--threshold T] [--judge-metadata DIR]
        [--alpha 0.05 --correction holm --bootstrap 1000 --seed 0]

Input: a canonical dataset whose label/vote columns are optional, or DIR/<system>/<prompt_id>.<ext>
(vlm_judge.data.load_generations, the same quality guard). Two systems that drew the same picture are both kept
and the picture is judged once. Every image goes through the same scorer as eval.compare (eval.scoring.score_judge:
the JudgeClient from the judge config, the per-item JSONL cache in OUTPUT/cache/<judge>.jsonl or --cache-dir),
so a killed run resumes and an image that this judge config scored already -- in eval.compare or eval.sbs, with
the same cache folder -- is not queried again.

Per pair of systems (A = --baseline when given), over their shared prompts: mean p_defect and defect rate at the
threshold, per-prompt wins/ties/losses, the paired test of eval.sbs (Wilcoxon signed-rank, the same side_tests
as eval.compare's SbS) with the multiple-comparison correction, a bootstrap CI of the mean difference, the
verdict ("A better" / "B better" / "no significant difference"), the prompts needed for 80 % power and the
minimum detectable effect; when the table has assessors' labels, their verdict beside the judge's. With
--baseline, the score drift (eval.drift) of every other system against it.

Threshold for defect rates: the validation threshold in the judge's judge_metadata.json (--judge-metadata, else
the served model's folder when the server names a local one) when it has one, else --threshold (default 0.5).

Output: sbs.md, sbs.json, scores.csv (image, system, prompt_id, p_defect, error, method), distribution.png,
differences.png. Exit status: 0 report written, 2 unusable input (the message names it; what was scored stays
in the cache), 130 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from vlm_judge.judges import JudgeSpec, JudgeSpecError, JudgeUnavailable

from . import sbs_power as P
from . import sbs_stats as S
from .compare import run_reporting_errors
from .sbs_analysis import analyse
from .sbs_inputs import SbsInputError, choose_threshold, load_items, score_items, select_systems, system_pairs


# Guard exclusions that mean an image could not be read: a bad input, not a data-quality remark.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.sbs",
        description="Compare generator versions side by side with a judge: verdicts, power, drift.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="canonical dataset (labels optional) or DIR/<system>/<prompt_id>.<ext>",
    )
    parser.add_argument("--judge", required=True, help="judge config (baselines/*.yaml)")
    parser.add_argument("--output", required=True, help="report folder, e.g. reports/NAME")
    parser.add_argument("--systems", nargs="+", default=None, help="systems to compare (default: all)")
    parser.add_argument(
        "--baseline", default=None, help="system A of its pairs; drift is reported against it"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="defect-rate threshold when the judge's judge_metadata.json has none (default 0.5)",
    )
    parser.add_argument(
        "--judge-metadata", default=None, help="judge_metadata.json or the judge's model folder"
    )
    parser.add_argument("--alpha", type=float, default=S.ALPHA, help="significance level (default 0.05)")
    parser.add_argument(
        "--correction", default="holm", choices=S.CORRECTIONS, help="over pairs (default holm)"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates of the CI (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--min-side", type=int, default=256, help="data guard: smallest image side in px")
    parser.add_argument(
        "--cache-dir", default=None, help="results cache (default OUTPUT/cache; share with eval.compare)"
    )
    parser.add_argument(
        "--retry-errors", action="store_true", help="re-query items whose cached result is an error"
    )
    parser.add_argument("--skip-bad-images", action="store_true", help="compare without unreadable images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Path]:
    from .sbs_report import write_sbs_report

    if not 0 < args.alpha < 1:
        raise SbsInputError("--alpha must be in (0, 1)")
    if args.bootstrap < 0:
        raise SbsInputError("--bootstrap must be >= 0")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise SbsInputError("--threshold must be in [0, 1]")
    config = JudgeSpec.from_yaml(args.judge)
    frame, guard = load_items(args.dataset, min_side=args.min_side, skip_bad_images=args.skip_bad_images)
    systems = select_systems(frame, args.systems, args.baseline, guard.source)
    pairs = system_pairs(systems, frame, guard.source)
    frame = frame[frame["system"].isin(systems)].reset_index(drop=True)

    try:
        judge = config.resolve()
    except JudgeUnavailable as exc:
        raise SbsInputError(f"judge {config.name} ({config.source}): {exc.reason}") from None
    output = Path(args.output)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output / "cache"
    threshold, threshold_source = choose_threshold(judge, args.judge_metadata, args.threshold)
    scored = score_items(
        judge, frame, cache_dir, retry_errors=args.retry_errors, progress=not args.no_progress
    )

    analysis = analyse(
        scored,
        systems,
        pairs,
        threshold=threshold,
        alpha=args.alpha,
        correction=args.correction,
        n_boot=args.bootstrap,
        seed=args.seed,
        baseline=args.baseline,
    )
    results = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m eval.sbs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "dataset": {
            "path": str(args.dataset),
            "guard": guard.summary(),
            "excluded": [vars(e) for e in guard.excluded],
            "shared_images": [vars(n) for n in guard.notes],
            "n_images": int(len(scored)),
            "n_pictures_judged": int(scored["pixel_sha256"].nunique()),
            "n_prompts": int(scored["prompt_id"].nunique()),
            "systems": systems,
        },
        "judge": judge.describe(),
        "settings": {
            "threshold": threshold,
            "threshold_source": threshold_source,
            "alpha": args.alpha,
            "correction": args.correction,
            "test": S.TEST_NAME,
            "bootstrap": args.bootstrap,
            "seed": args.seed,
            "ci": "95 % percentile bootstrap over prompts of the mean per-prompt difference A - B",
            "power": P.POWER,
            "power_method": P.POWER_METHOD,
            "mde_method": P.MDE_METHOD,
            "baseline": args.baseline,
            "cache_dir": str(cache_dir),
            "n_cached": int(scored.drop_duplicates("pixel_sha256")["cached"].sum()),
        },
        **analysis,
    }
    return write_sbs_report(results, scored, output)


def main(argv: list[str] | None = None) -> int:
    from vlm_judge.data import DataFormatError
    from vlm_judge.protocol import ProtocolError

    args = build_parser().parse_args(argv)
    input_errors = (SbsInputError, JudgeSpecError, DataFormatError, ProtocolError, S.SbsError)
    return run_reporting_errors(run, args, argv, input_errors)


if __name__ == "__main__":
    sys.exit(main())
