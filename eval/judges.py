"""Judge configs (``baselines/*.yaml``) -> a resolved JudgeSpec, or a skip with the reason.

A config file is a vlm_judge.judges.JudgeSpec written as YAML: its keys are the spec's fields (see that class
for each one), read by ``JudgeSpec.from_yaml``; unknown keys are named in the error. Every judge is then run by
the same harness (eval.compare, eval.sbs) through the same client, ``JudgeClient.from_spec(spec)``.
Relative ``prompt`` paths are looked up from the current directory, then from the project root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vlm_judge.judges import JudgeSpec, JudgeSpecError, JudgeUnavailable

JudgeConfigError = JudgeSpecError  # the harness's name for it
ResolvedJudge = JudgeSpec  # a spec whose endpoint, model and key are filled in (JudgeSpec.resolve)


@dataclass(frozen=True)
class SkippedJudge:
    name: str
    source: str
    reason: str  # starts with "skipped: "


def load_judge_config(path: str | Path) -> JudgeSpec:
    """Read and validate one judge config file; JudgeConfigError names the file and the field at fault."""
    return JudgeSpec.from_yaml(path)


def resolve_judge(config: JudgeSpec, env: Mapping[str, str] | None = None) -> JudgeSpec | SkippedJudge:
    """Fill endpoint, model and key from the environment; a missing one makes a SkippedJudge with the reason."""
    try:
        return config.resolve(env)
    except JudgeUnavailable as exc:
        return SkippedJudge(str(config.name), str(config.source), f"skipped: {exc.reason}")
