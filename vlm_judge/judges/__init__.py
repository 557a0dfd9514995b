"""How a judge is described and reached: `JudgeSpec` (the baselines/*.yaml schema and the client's settings) and
`probe(spec)`. The client that scores with a spec is vlm_judge.client (`JudgeClient.from_spec(spec)`)."""

from vlm_judge.judges.endpoint import (
    EndpointError,
    ModelNotServedError,
    fetch_answer_token_id_groups,
    fetch_answer_token_ids,
    probe,
    server_root,
)
from vlm_judge.judges.spec import JudgeSpec, JudgeSpecError, JudgeUnavailable

__all__ = [
    "EndpointError",
    "JudgeSpec",
    "JudgeSpecError",
    "JudgeUnavailable",
    "ModelNotServedError",
    "fetch_answer_token_id_groups",
    "fetch_answer_token_ids",
    "probe",
    "server_root",
]
