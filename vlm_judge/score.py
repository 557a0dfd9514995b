"""`python -m vlm_judge.score --base-url URL --model NAME --input DIR|CSV --output preds.csv`: batch scoring.

Input: a folder (every image file under it, recursively; `image` = the path relative to the folder) or a CSV with
an `image` column (paths relative to the CSV's folder, as in a dataset's labels.csv; `image` = the value as given).

Output: CSV with columns image, p_defect, latency_ms, error, method (how p_defect was read: "exact" = every Yes/No
token variant's logprob, vLLM's default here; "top_k" = only the top k, for endpoints without vLLM's /tokenize;
"classify", "local", "verbalized"; see vlm_judge.judges.answers.METHODS); one row per image, appended (and flushed) as each
one finishes, so a kill loses at most the requests in flight. Resumable: a rerun with the same --output skips
the images that already have a p_defect and tries the failed ones again (the file is first rewritten, atomically,
without their old error rows). The CSV is a vlm_judge.results store, the same resume logic as the eval harness's.

Exit codes: 0 the output holds a score for at least one image (failed images, if any, carry an error and are
counted on stderr; a rerun retries them, and exits 0 again even if they fail again); 1 the judge could not be
reached (server down, ...) while images were left to score, or the output holds no score at all; 2 bad arguments or input; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_judge.results import ResultStore, ResultStoreError, succeeded

if TYPE_CHECKING:
    from vlm_judge.judges import JudgeSpec
    from vlm_judge.judges.answers import JudgeResult

COLUMNS = ["image", "p_defect", "latency_ms", "error", "method"]  # method: how p_defect was read (answers.METHODS)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


ANSWER_LOGPROBS = {"auto": None, "exact": True, "top-k": False}  # --answer-logprobs -> JudgeSpec.exact_answer_logprobs


class ScoreError(Exception):
    """Bad arguments or input; the message is for the user (no traceback)."""


def list_inputs(source: str | Path, image_column: str = "image") -> list[tuple[str, Path]]:
    """(name, path) of every image to score, in a stable order, duplicates dropped."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ScoreError(
                f"--input {source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under it"
            )
        return [(p.relative_to(source).as_posix(), p) for p in files]
    if not source.is_file():
        raise ScoreError(f"--input {source}: no such file or directory")
    if source.suffix.lower() != ".csv":
        raise ScoreError(
            f"--input {source}: expected a folder of images or a .csv with an {image_column!r} column"
        )
    try:
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if image_column not in (reader.fieldnames or []):
                raise ScoreError(
                    f"--input {source}: no {image_column!r} column (columns: {', '.join(reader.fieldnames or [])})"
                )
            names = [(row.get(image_column) or "").strip() for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ScoreError(f"--input {source}: not a readable CSV ({exc})") from None
    seen: dict[str, Path] = {}
    for name in names:
        if name and name not in seen:
            path = Path(name)
            seen[name] = path if path.is_absolute() else source.parent / path
    if not seen:
        raise ScoreError(f"--input {source}: the {image_column!r} column is empty")
    return list(seen.items())


def prediction_row(_key: str, result: JudgeResult) -> dict[str, Any]:
    """One predictions-CSV row (COLUMNS) of a result."""
    latency = None if result.latency_ms is None else f"{result.latency_ms:.1f}"
    return {"p_defect": result.p_defect, "latency_ms": latency, "error": result.error, "method": result.method}


def open_store(output: Path) -> ResultStore:
    """The predictions CSV as a results store, its failed and torn rows dropped (atomically) to be scored again."""
    try:
        store = ResultStore(output, columns=COLUMNS, key="image")
    except ResultStoreError as exc:
        raise ScoreError(f"--output {exc}; choose another --output or remove it") from None
    store.discard([name for name, record in store.records.items() if not succeeded(record)])
    return store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlm_judge.score", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-url",
        required=True,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; 'local' scores --model in this process",
    )
    parser.add_argument(
        "--model", required=True, help="served model name, e.g. defect-judge (a checkpoint folder with 'local')"
    )
    parser.add_argument("--input", required=True, help="folder of images, or a CSV with an image column")
    parser.add_argument("--output", required=True, help="predictions CSV (appended to; rerun to resume)")
    parser.add_argument(
        "--image-column", default="image", help="CSV column with image paths (default: image)"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY"
    )
    parser.add_argument("--prompt", default=None, help="prompt file (its mode picks logprobs or verbalized)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--max-retries", type=int, default=3, help="retries on connection errors, 429, 5xx")
    parser.add_argument("--top-logprobs", type=int, default=20, help="first-token candidates (logprob mode)")
    parser.add_argument(
        "--answer-logprobs",
        choices=ANSWER_LOGPROBS,
        default="auto",
        help="auto (default): every Yes/No token variant's exact logprob where the endpoint is vLLM (its /tokenize "
        "answers), the top k elsewhere; exact: require it; top-k: always the top k (the method column says which)",
    )
    parser.add_argument(
        "--exact-answer-logprobs",
        dest="answer_logprobs",
        action="store_const",
        const="exact",
        help="the same as --answer-logprobs exact (kept for older commands)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def judge_spec(args: argparse.Namespace) -> JudgeSpec:
    """The command line's judge settings as a JudgeSpec (ScoreError names a bad one)."""
    from vlm_judge.judges import JudgeSpec, JudgeSpecError

    if args.concurrency < 1:
        raise ScoreError("--concurrency must be >= 1")
    try:
        return JudgeSpec(
            base_url=args.base_url,
            model=args.model,
            api_key=args.api_key,
            prompt=args.prompt,
            top_logprobs=args.top_logprobs,
            exact_answer_logprobs=ANSWER_LOGPROBS[args.answer_logprobs],
            max_concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_retries,
        )
    except JudgeSpecError as exc:
        raise ScoreError(str(exc)) from None


def score_pending(
    spec: JudgeSpec,
    store: ResultStore,
    pending: Sequence[tuple[str, Any, str]],
    record: Callable[[str, JudgeResult], dict[str, Any]],
    *,
    check: bool = True,
    progress: bool = False,
    on_result: Callable[[JudgeResult], None] | None = None,
) -> list[JudgeResult]:
    """The resumable scorer (this command's and the eval harness's cache): score the `pending` (key, image, name)
    items with the judge `spec` describes, appending `record(key, result)` to `store` under the item's key as each one
    lands (a kill loses only the items in flight; their old records are dropped first, so the store again holds
    one record per key). With `check`, the endpoint is probed first: EndpointError / ModelNotServedError name an
    unreachable server or an unknown model once, instead of one identical error per item."""
    from vlm_judge.client import make_judge
    from vlm_judge.judges import probe

    if not pending:
        return []
    if check:
        probe(spec, timeout=min(spec.timeout, 30.0))
    judge = make_judge(spec)
    store.discard(key for key, _, _ in pending)

    def land(index: int, result: JudgeResult) -> None:
        key = pending[index][0]
        store.append(key, record(key, result))
        if on_result is not None:
            on_result(result)

    try:
        return judge.score_batch(
            [image for _, image, _ in pending], [name for _, _, name in pending], on_result=land, progress=progress
        )
    finally:
        judge.close()


def run(args: argparse.Namespace) -> int:
    from vlm_judge.judges import EndpointError, ModelNotServedError
    from vlm_judge.protocol import ProtocolError

    spec = judge_spec(args)
    inputs = list_inputs(args.input, args.image_column)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(output)
    todo = [(name, path) for name, path in inputs if name not in store]
    print(
        f"vlm_judge.score: {len(inputs)} images, {len(inputs) - len(todo)} already in {output}, {len(todo)} to score",
        file=sys.stderr,
    )
    if not todo:
        return 0
    failures: Counter[str] = Counter()

    def count(result: JudgeResult) -> None:
        if result.error:
            failures[result.error_kind or "Error"] += 1

    with store:
        try:
            score_pending(
                spec,
                store,
                [(name, path, name) for name, path in todo],
                prediction_row,
                progress=not args.no_progress,
                on_result=count,
            )
        except ModelNotServedError as exc:
            raise ScoreError(str(exc)) from None
        except (EndpointError, ProtocolError) as exc:  # unreachable, or the client's own checks
            print(f"vlm_judge.score: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                f"\nvlm_judge.score: interrupted; rerun the same command to resume ({output})",
                file=sys.stderr,
            )
            return 130

    failed = sum(failures.values())
    kinds = ", ".join(f"{kind}: {n}" for kind, n in failures.most_common())
    detail = f" ({kinds}; see the error column)" if failed else ""
    scored_in_output = sum(succeeded(record) for record in store.records.values())
    print(
        f"vlm_judge.score: scored {len(todo) - failed}, failed {failed}{detail}; {output} holds "
        f"{scored_in_output} of {len(inputs)} images scored",
        file=sys.stderr,
    )
    # The state of the output decides, not this run's share: a rerun whose retried images fail again exits as
    # the first run did.
    return 0 if scored_in_output else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ScoreError as exc:
        print(f"vlm_judge.score: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
