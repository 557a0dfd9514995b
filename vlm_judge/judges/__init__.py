"""How a judge is described and reached: `JudgeSpec` (the baselines/*.yaml schema and the client's settings),
`probe(spec)`, the answers' parsing and the in-process LocalJudge (vlm_judge.client.make_judge(spec) picks the
backend: the OpenAI-compatible client, or LocalJudge for `base_url: local`)."""

from vlm_judge.judges.backends import Judge, LocalJudge
from vlm_judge.judges.endpoint import (
    EndpointError,
    ModelNotServedError,
    fetch_answer_token_id_groups,
    fetch_answer_token_ids,
    probe,
    server_root,
)
from vlm_judge.judges.spec import LOCAL, JudgeSpec, JudgeSpecError, JudgeUnavailable

__all__ = [
    "LOCAL",
    "EndpointError",
    "Judge",
    "JudgeSpec",
    "JudgeSpecError",
    "JudgeUnavailable",
    "LocalJudge",
    "ModelNotServedError",
    "fetch_answer_token_id_groups",
    "fetch_answer_token_ids",
    "probe",
    "server_root",
]
