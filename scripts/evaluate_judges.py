"""The main job's evaluate stage: serve the fine-tuned judge and the prompted base model with vLLM, run
`python -m eval.compare` over them (plus GPT-5.1 / Qwen-3-30B when their endpoints are configured), stop the
servers.

    python scripts/evaluate_judges.py --judge_model models/judge-tiny --base_model models/tiny-base \
        --dataset data/synthetic-224 --output reports/main
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from eval.compare import main as compare_main
from vlm_judge.serving.judge_server import JudgeServer


@dataclass
class Args:
    judge_model: str = field(metadata={"help": "merged judge directory (scripts/merge_lora.py)"})
    dataset: str = field(metadata={"help": "canonical dataset folder"})
    output: str = field(default="reports/main", metadata={"help": "report folder"})
    base_model: str | None = field(default=None, metadata={"help": "base model to evaluate as a prompted baseline"})
    split: str = field(default="test")
    photo_dataset: str | None = field(
        default=None,
        metadata={
            "help": "real-photograph set (scripts/make_photo_eval_set.py), never trained on: the same judges are "
            "also compared on it, report in OUTPUT/photos/"
        },
    )
    judges: list[str] = field(
        default_factory=lambda: [
            "baselines/finetuned.yaml",
            "baselines/base-tiny.yaml",
            "baselines/gpt-5.1.yaml",
            "baselines/qwen3-30b.yaml",
        ],
        metadata={"help": "judge configs; the first two are pointed at the servers started here"},
    )
    min_side: int = field(default=64, metadata={"help": "data guard's minimum image side"})
    bootstrap: int = field(default=1000)
    summary: str | None = field(
        default=None, metadata={"help": "also write the headline metrics per judge here (for `dvc metrics show`)"}
    )


HEADLINE = ("roc_auc", "accuracy@0.5", "accuracy@val", "rmse_soft", "brier", "ece")


def write_summary(metrics_path: Path, summary_path: Path) -> None:
    """The headline numbers of each judge, flat enough for `dvc metrics show`."""
    report = json.loads(metrics_path.read_text())
    summary = {}
    for name, judge in report["judges"].items():
        quality = judge.get("quality", {}).get("metrics", {})
        sbs = judge.get("sbs", {}).get("summary", {})
        summary[name] = {
            **{key: quality.get(key) for key in HEADLINE},
            "failure_rate": judge["failures"]["failure_rate"],
            "latency_mean_ms": judge["latency"]["latency_mean_ms"],
            "sbs_macro_accuracy": sbs.get("macro_accuracy"),
            "sbs_assessor_significant_pairs": sbs.get("n_assessor_significant"),
        }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")


def weights_revision(model_dir: str) -> str:
    """A short hash of the weights, so the eval cache never serves answers of an older checkpoint."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main() -> int:
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    for path in (args.judge_model, args.base_model, args.dataset, args.photo_dataset):
        if path and not Path(path).exists():
            print(f"evaluate: {path} does not exist (run the earlier stages first)", file=sys.stderr)
            return 2
    with ExitStack() as stack:
        servers = [("JUDGE", args.judge_model, "defect-judge")]
        if args.base_model:
            servers.append(("BASE_JUDGE", args.base_model, "base-tiny"))
        for env_prefix, model_dir, name in servers:
            print(f"[evaluate] starting vLLM for {model_dir} as {name!r} (CPU: ~1-2 min)", flush=True)
            server = stack.enter_context(JudgeServer(model_dir, served_model_name=name))
            print(f"[evaluate] {name} ready at {server.base_url} after {server.startup_s:.0f} s", flush=True)
            os.environ[f"{env_prefix}_BASE_URL"] = server.base_url
            os.environ[f"{env_prefix}_MODEL"] = name
            os.environ[f"{env_prefix}_REVISION"] = weights_revision(model_dir)
        judges = args.judges if args.base_model else [j for j in args.judges if "base-tiny" not in j]
        common = ["--min-side", str(args.min_side), "--bootstrap", str(args.bootstrap), "--judges", *judges]
        code = compare_main(["--dataset", args.dataset, "--output", args.output, "--split", args.split, *common])
        if code == 0 and args.photo_dataset:
            print(f"[evaluate] the same judges on the real photographs of {args.photo_dataset}", flush=True)
            photos = str(Path(args.output) / "photos")
            code = compare_main(["--dataset", args.photo_dataset, "--output", photos, "--split", "test", *common])
    if code == 0 and args.summary:
        write_summary(Path(args.output) / "metrics.json", Path(args.summary))
    print(f"[evaluate] servers stopped; report: {Path(args.output) / 'report.md'}", flush=True)
    if args.photo_dataset:
        print(f"[evaluate] real photographs: {Path(args.output) / 'photos' / 'report.md'}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
