"""How a judge is described and reached: `JudgeSpec` (the baselines/*.yaml schema and the client's settings),
`probe(spec)` and `make_judge(spec)`, the backend that scores with a spec: the OpenAI-compatible client
(vlm_judge.client.JudgeClient) or, for `base_url: local`, the in-process LocalJudge."""

from vlm_judge.judges.backends import Judge, LocalJudge, make_judge
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
    "make_judge",
    "probe",
    "server_root",
]
