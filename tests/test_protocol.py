import math

import pytest
import torch

from vlm_judge.protocol import (
    AnswerNotFoundError,
    ProtocolError,
    answer_token_ids,
    hf_messages,
    load_prompt,
    openai_messages,
    p_defect_from_logits,
    p_defect_from_logprobs,
    p_defect_from_top_logprobs,
    parse_verbalized_answer,
)


def test_prompt_file_loads_with_version_and_answer_words():
    prompt = load_prompt()
    assert prompt.version == "defect-judge-v1"
    assert (prompt.defect_word, prompt.clean_word) == ("Yes", "No")
    assert prompt.mode == "logprobs"
    assert "Yes or No" in prompt.user


def test_bad_prompt_files_name_the_file(tmp_path):
    with pytest.raises(ProtocolError, match="does not exist"):
        load_prompt(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nsystem: s\n")
    with pytest.raises(ProtocolError, match=r"bad\.yaml.*lacks user"):
        load_prompt(bad)


def test_messages_shapes():
    prompt = load_prompt()
    hf = hf_messages(prompt, answer="No")
    assert [m["role"] for m in hf] == ["system", "user", "assistant"]
    assert hf[1]["content"][0] == {"type": "image"}
    assert hf[2]["content"][0]["text"] == "No"
    oa = openai_messages(prompt, "data:image/png;base64,AAAA")
    assert oa[1]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert oa[1]["content"][1]["text"] == prompt.user


def test_p_defect_from_hand_made_logprobs():
    # P(Yes)=0.6, P(No)=0.2 -> 0.75
    top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": "No", "logprob": math.log(0.2)},
           {"token": "Maybe", "logprob": math.log(0.1)}]
    assert p_defect_from_top_logprobs(top) == pytest.approx(0.75)
    # a {token: logprob} mapping works the same
    assert p_defect_from_top_logprobs({"Yes": math.log(0.6), "No": math.log(0.2)}) == pytest.approx(0.75)


def test_case_and_space_variants_are_merged():
    top = {"Yes": math.log(0.3), " yes": math.log(0.1), "ĠYES": math.log(0.1), "No": math.log(0.25),
           "▁no": math.log(0.25)}
    assert p_defect_from_top_logprobs(top) == pytest.approx(0.5 / 1.0)


def test_one_missing_answer_is_zero_probability_and_none_is_an_error():
    assert p_defect_from_top_logprobs({"Yes": -0.1, "The": -3.0}) == 1.0
    assert p_defect_from_top_logprobs({"No": -0.1}) == 0.0
    with pytest.raises(AnswerNotFoundError, match="neither 'Yes' nor 'No'.*'The'"):
        p_defect_from_top_logprobs({"The": -0.1, "A": -2.0})
    with pytest.raises(AnswerNotFoundError):
        p_defect_from_top_logprobs([])


def test_objects_with_attributes_and_non_finite_logprobs():
    class Entry:
        def __init__(self, token, logprob):
            self.token, self.logprob = token, logprob

    top = [Entry("Yes", float("-inf")), Entry("No", math.log(0.5)), Entry("Yes", float("nan"))]
    assert p_defect_from_top_logprobs(top) == 0.0


def test_logprob_rule_is_stable_for_extreme_values():
    assert p_defect_from_logprobs(0.0, -1000.0) == pytest.approx(1.0)
    assert p_defect_from_logprobs(-1000.0, 0.0) == pytest.approx(0.0, abs=1e-300)
    assert p_defect_from_logprobs(-2.0, -2.0) == 0.5


def test_logits_rule_matches_logprob_rule():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    defect_ids, clean_ids = [3, 7], [11]
    p = p_defect_from_logits(logits, defect_ids, clean_ids)
    logprobs = torch.log_softmax(logits, dim=-1)
    for row in range(3):
        top = {f"Yes{'' if i == 3 else ' '}": logprobs[row, i].item() for i in defect_ids}
        top["No"] = logprobs[row, 11].item()
        assert p[row].item() == pytest.approx(p_defect_from_top_logprobs(top), abs=1e-6)


def test_answer_token_ids_on_the_tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    defect_ids, clean_ids = answer_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("Yes") in defect_ids
    assert tokenizer.convert_tokens_to_ids("No") in clean_ids
    assert not set(defect_ids) & set(clean_ids)


def test_answer_words_without_single_token_are_rejected():
    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    with pytest.raises(ProtocolError, match="no single token for the answer word 'Yes'"):
        answer_token_ids(CharTokenizer())


@pytest.mark.parametrize(
    ("reply", "p", "defects"),
    [
        ('{"defect_probability": 0.8, "defects": ["seam"]}', 0.8, ("seam",)),
        ('```json\n{"defect_probability": 0, "defects": []}\n```', 0.0, ()),
    ],
)
def test_verbalized_answers_parse(reply, p, defects):
    answer = parse_verbalized_answer(reply)
    assert answer.p_defect == p and answer.defects == defects


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "empty reply"),
        (None, "empty reply"),
        ("I cannot help with that.", "not JSON"),
        ('{"defects": []}', "lacks 'defect_probability'"),
        ('{"defect_probability": "high", "defects": []}', "not a number"),
        ('{"defect_probability": 1.5, "defects": []}', r"outside \[0, 1\]"),
        ('{"defect_probability": true, "defects": []}', "not a number"),
        ('{"defect_probability": 0.5, "defects": "seam"}', "list of strings"),
    ],
)
def test_verbalized_answers_reject_malformed_replies(reply, message):
    with pytest.raises(ProtocolError, match=message):
        parse_verbalized_answer(reply)
