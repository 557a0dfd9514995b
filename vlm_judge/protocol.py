"""The judge protocol, written once: the prompt, the chat messages (HF and OpenAI shapes) and the rule that turns
the first answer token's distribution into p_defect = P(Yes) / (P(Yes) + P(No)).

Training (labels and the evaluation's p_defect), the client, the baselines and eval all import this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


def _prompts_dir() -> Path:
    """The judge prompts: the package vlm_judge.prompts in an installed wheel, the top-level prompts/ folder in a
    checkout (pyproject.toml maps one to the other)."""
    installed = Path(__file__).resolve().parent / "prompts"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


PROMPTS_DIR = _prompts_dir()
DEFAULT_PROMPT_FILE = PROMPTS_DIR / "defect_judge.yaml"


class ProtocolError(ValueError):
    """The model's answer (or a prompt file) does not fit the judge protocol."""


class AnswerNotFoundError(ProtocolError):
    """Neither answer word is among the returned first-token candidates."""


@dataclass(frozen=True)
class JudgePrompt:
    version: str
    system: str
    user: str
    defect_word: str = "Yes"
    clean_word: str = "No"
    mode: str = "logprobs"  # "logprobs": read P(Yes)/P(No); "verbalized": the model states a probability in JSON
    source: str = ""

    def answer_word(self, defective: bool) -> str:
        return self.defect_word if defective else self.clean_word


def load_prompt(path: str | Path | None = None) -> JudgePrompt:
    """Read a prompt file (default: prompts/defect_judge.yaml); errors name the file and the missing key."""
    path = Path(path) if path else DEFAULT_PROMPT_FILE
    return _load_prompt_cached(str(path.resolve()))


@lru_cache(maxsize=16)
def _load_prompt_cached(path: str) -> JudgePrompt:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProtocolError(f"prompt file {path!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ProtocolError(f"prompt file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"prompt file {path!r} must hold a mapping")
    missing = [key for key in ("version", "system", "user") if not raw.get(key)]
    if missing:
        raise ProtocolError(f"prompt file {path!r} lacks {', '.join(missing)}")
    answers = raw.get("answers") or {}
    prompt = JudgePrompt(
        version=str(raw["version"]),
        system=str(raw["system"]).strip(),
        user=str(raw["user"]).strip(),
        defect_word=str(answers.get("defect", "Yes")),
        clean_word=str(answers.get("clean", "No")),
        mode=str(raw.get("mode", "logprobs")),
        source=path,
    )
    if prompt.mode not in ("logprobs", "verbalized"):
        raise ProtocolError(f"prompt file {path!r}: mode must be 'logprobs' or 'verbalized', not {prompt.mode!r}")
    if _normalize(prompt.defect_word) == _normalize(prompt.clean_word):
        raise ProtocolError(f"prompt file {path!r}: the two answer words must differ")
    return prompt


# ---------------------------------------------------------------------------------------------- messages


def hf_messages(prompt: JudgePrompt, answer: str | None = None) -> list[dict[str, Any]]:
    """Messages for a HF processor's chat template; the image goes where {"type": "image"} stands.

    With `answer`, an assistant turn is appended (the training target)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def openai_messages(prompt: JudgePrompt, image_url: str) -> list[dict[str, Any]]:
    """Messages for an OpenAI-compatible chat-completions request; `image_url` is usually a data URL."""
    return [
        {"role": "system", "content": prompt.system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": prompt.user},
            ],
        },
    ]


def image_only_messages(image_url: str) -> list[dict[str, Any]]:
    """A request that carries only the image: the server (python -m vlm_judge.serve) adds the judge prompt."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}]}]


def server_chat_template(base_template: str, prompt: JudgePrompt) -> str:
    """The model's chat template with the judge prompt built in, for the server (python -m vlm_judge.serve).

    A request whose only message is a user turn without text (just the image) is rendered as if it carried
    openai_messages(prompt, image): the prompt's system turn, the image, the prompt's user text, and the generation
    prompt (also for /classify and /tokenize, whose add_generation_prompt defaults to false: the answer position is
    what the judge reads). Any other request (e.g. one a client built with openai_messages) renders unchanged."""
    system, user = json.dumps(prompt.system), json.dumps(prompt.user)
    prelude = (
        f"{{#- vlm_judge: judge prompt {prompt.version} for image-only requests -#}}\n"
        "{%- set judge = namespace(image_only=(messages | length == 1 and messages[0]['role'] == 'user'"
        " and messages[0]['content'] is not string)) -%}\n"
        "{%- if judge.image_only -%}{%- for part in messages[0]['content'] -%}"
        "{%- if part['type'] == 'text' or 'text' in part -%}{%- set judge.image_only = false -%}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}\n"
        "{%- if judge.image_only -%}\n"
        f"{{%- set messages = [{{'role': 'system', 'content': {system}}}, {{'role': 'user', 'content': "
        f"messages[0]['content'] + [{{'type': 'text', 'text': {user}}}]}}] -%}}\n"
        "{%- set add_generation_prompt = true -%}\n"
        "{%- endif -%}\n"
    )
    return prelude + base_template


# ---------------------------------------------------------------------------------------------- Yes/No rule


def _normalize(token: str) -> str:
    # Byte-level BPE marks a leading space with "Ġ"; SentencePiece with "▁".
    return token.replace("Ġ", " ").replace("▁", " ").strip().casefold()


def p_defect_from_logprobs(defect_logprob: float, clean_logprob: float) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the two (unnormalised) log-probabilities, computed stably."""
    diff = defect_logprob - clean_logprob
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    z = math.exp(diff)
    return z / (1.0 + z)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def p_defect_from_top_logprobs(
    top_logprobs: Mapping[str, float] | Iterable[Any], prompt: JudgePrompt | None = None
) -> float:
    """p_defect from the first answer token's top candidates, as an OpenAI-compatible API returns them.

    Accepts a {token: logprob} mapping or a list of objects/dicts with `token` and `logprob`. Case and
    leading-space variants ("Yes", " yes", "YES") are merged by summing their probabilities. An answer word
    missing from the candidates counts as zero probability; when both are missing, AnswerNotFoundError.
    """
    prompt = prompt or load_prompt()
    pairs = _as_pairs(top_logprobs)
    defect_key, clean_key = _normalize(prompt.defect_word), _normalize(prompt.clean_word)
    defect = [lp for tok, lp in pairs if _normalize(tok) == defect_key]
    clean = [lp for tok, lp in pairs if _normalize(tok) == clean_key]
    if not defect and not clean:
        shown = ", ".join(repr(tok) for tok, _ in pairs[:5]) or "none"
        raise AnswerNotFoundError(
            f"neither {prompt.defect_word!r} nor {prompt.clean_word!r} is among the {len(pairs)} first-token "
            f"candidates (top: {shown}); the model did not answer the judge prompt"
        )
    if not clean:
        return 1.0
    if not defect:
        return 0.0
    return p_defect_from_logprobs(_logsumexp(defect), _logsumexp(clean))


def _as_pairs(top_logprobs: Mapping[str, float] | Iterable[Any]) -> list[tuple[str, float]]:
    if isinstance(top_logprobs, Mapping):
        items = list(top_logprobs.items())
    else:
        items = []
        for entry in top_logprobs:
            if isinstance(entry, Mapping):
                items.append((entry.get("token"), entry.get("logprob")))
            else:
                items.append((getattr(entry, "token", None), getattr(entry, "logprob", None)))
    pairs = []
    for token, logprob in items:
        if token is None or logprob is None or not math.isfinite(float(logprob)):
            continue  # -inf is zero probability; NaN/+inf carry no usable information
        pairs.append((str(token), float(logprob)))
    return pairs


def answer_variant_texts(prompt: JudgePrompt | None = None) -> list[str]:
    """The texts whose tokenization answer_token_ids reads: each answer word's case and leading-space variants."""
    prompt = prompt or load_prompt()
    texts: list[str] = []
    for word in (prompt.defect_word, prompt.clean_word):
        for variant in (word, word.lower(), word.upper(), word.capitalize()):
            for text in (variant, " " + variant):
                if text not in texts:
                    texts.append(text)
    return texts


def answer_token_ids_from_encodings(
    encodings: Mapping[str, Sequence[int]], prompt: JudgePrompt | None = None
) -> tuple[list[int], list[int]]:
    """answer_token_ids from the token ids of answer_variant_texts (e.g. as a server's /tokenize returned them)."""
    prompt = prompt or load_prompt()
    result = []
    for word in (prompt.defect_word, prompt.clean_word):
        ids = {
            int(encodings[text][0])
            for variant in {word, word.lower(), word.upper(), word.capitalize()}
            for text in (variant, " " + variant)
            if len(encodings[text]) == 1
        }
        # The assistant turn starts with the bare word: that form must be one token, or the first answer
        # token would not be the answer.
        if len(encodings[word]) != 1:
            raise ProtocolError(f"the tokenizer has no single token for the answer word {word!r}")
        result.append(sorted(ids))
    return result[0], result[1]


def answer_token_ids(tokenizer: Any, prompt: JudgePrompt | None = None) -> tuple[list[int], list[int]]:
    """Vocabulary ids of every single-token variant of the two answer words (case, leading space).

    Raises ProtocolError if either word has no single-token form: the rule reads one token."""
    prompt = prompt or load_prompt()
    encodings = {
        text: tokenizer.encode(text, add_special_tokens=False) for text in answer_variant_texts(prompt)
    }
    return answer_token_ids_from_encodings(encodings, prompt)


def defect_log_odds_from_logits(logits: Any, defect_ids: Sequence[int], clean_ids: Sequence[int]) -> Any:
    """log(P(Yes) / P(No)) from first-answer-token logits (a torch tensor [..., vocab]); returns a tensor [...]."""
    import torch

    logits = logits.float()
    defect = torch.logsumexp(logits[..., list(defect_ids)], dim=-1)
    clean = torch.logsumexp(logits[..., list(clean_ids)], dim=-1)
    return defect - clean


def p_defect_from_logits(logits: Any, defect_ids: Sequence[int], clean_ids: Sequence[int]) -> Any:
    """p_defect from first-answer-token logits (a torch tensor [..., vocab]); returns a tensor [...].

    Variants are merged with logsumexp, so this equals the top-logprobs rule on the same distribution."""
    import torch

    return torch.sigmoid(defect_log_odds_from_logits(logits, defect_ids, clean_ids))


# ---------------------------------------------------------------------------------------------- verbalized mode

VERBALIZED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "defect_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "defects": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["defect_probability", "defects"],
    "additionalProperties": False,
}


def verbalized_response_format() -> dict[str, Any]:
    """`response_format` for structured output in an OpenAI-compatible request."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "defect_judgement", "schema": VERBALIZED_SCHEMA, "strict": True},
    }


@dataclass(frozen=True)
class VerbalizedAnswer:
    p_defect: float
    defects: tuple[str, ...]


def parse_verbalized_answer(text: str | None) -> VerbalizedAnswer:
    """Strictly parse {"defect_probability": p, "defects": [...]}; a ```json fence around it is tolerated.

    Anything else (prose, refusal, missing key, p outside [0, 1]) is a ProtocolError quoting the reply."""
    if text is None or not text.strip():
        raise ProtocolError("empty reply: the model returned no content (refusal or filtered output)")
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        if body.lower().startswith("json"):
            body = body[4:].strip()
    snippet = text.strip().replace("\n", " ")[:120]
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ProtocolError(f"reply is not JSON: {snippet!r}") from None
    if not isinstance(data, dict) or "defect_probability" not in data:
        raise ProtocolError(f"reply lacks 'defect_probability': {snippet!r}")
    value = data["defect_probability"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"'defect_probability' is not a number: {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ProtocolError(f"'defect_probability' {value!r} is outside [0, 1]")
    defects = data.get("defects", [])
    if not isinstance(defects, list) or not all(isinstance(d, str) for d in defects):
        raise ProtocolError(f"'defects' must be a list of strings: {defects!r}")
    return VerbalizedAnswer(p_defect=float(value), defects=tuple(defects))
