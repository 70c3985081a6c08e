import json
import math

import pytest
from langchain_core.messages import AIMessage

from memalign_graph import JudgmentParseError
from memalign_graph.judge import (
    arun_judge,
    build_messages,
    find_precedent,
    judgment_schema,
    parse_judgment,
    run_judge,
    value_scores,
)
from memalign_graph.spec import case_hash
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, NUMERIC, PAIRWISE

CASE = {"inputs": "List orders", "outputs": "SELECT * FROM raw.orders"}
PRINCIPLE = {
    "id": "p-1",
    "text": "Prefer the certified view over raw tables.",
    "sources": ["r1"],
    "created_at": "",
    "author": "x",
}
EPISODE = {
    "id": "r1",
    "inputs": "Count orders",
    "outputs": "SELECT count(*) FROM raw.orders",
    "value": "fail",
    "feedback": "Use analytics.orders_certified.",
    "judge_value": "pass",
    "case_hash": "abc",
    "score": 0.9,
}


@pytest.mark.parametrize(
    "spec, text, expected",
    [
        (CATEGORICAL, '{"rationale": "uses raw table", "value": "fail"}', "fail"),
        (CATEGORICAL, '```json\n{"rationale": "ok", "value": "PASS"}\n```', "pass"),
        (NUMERIC, 'Sure! {"rationale": "warm", "value": "4"} hope that helps', 4),
        (NUMERIC, '{"value": 2}', 2),
        (PAIRWISE, '{"rationale": "B is complete", "value": "B"}', "B"),
        (PAIRWISE, '{"rationale": "same", "value": "Tie"}', "tie"),
    ],
)
def test_parse_judgment_all_kinds(spec, text, expected):
    value, _ = parse_judgment(spec, text)
    assert value == expected


@pytest.mark.parametrize(
    "spec, text, reason",
    [
        (CATEGORICAL, "I think it passes", "no JSON object"),
        (CATEGORICAL, '{"rationale": "x"}', "no 'value'"),
        (NUMERIC, '{"value": 9}', "not an integer from 1 to 5"),
        (PAIRWISE, '{"value": "C"}', "not one of: A, B, tie"),
    ],
)
def test_parse_judgment_rejects(spec, text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_judgment(spec, text)


def test_working_memory_holds_principles_episodes_and_case():
    system, user = build_messages(CATEGORICAL, CASE, [PRINCIPLE], [EPISODE])
    assert "Does the SQL follow the house rules?" in system.text
    assert "- Prefer the certified view over raw tables." in system.text
    assert "one of: pass, fail" in system.text
    assert "Use analytics.orders_certified." in user.text
    assert "Judge said: pass | Expert value: fail" in user.text
    assert user.text.index("Similar past cases") < user.text.index("Case to judge:")
    assert "SELECT * FROM raw.orders" in user.text.split("Case to judge:")[1]


def test_working_memory_without_memory_has_no_sections():
    system, user = build_messages(PAIRWISE, {"inputs": "q", "outputs": ["a", "b"]}, [], [])
    assert "Principles" not in system.text and "Similar past cases" not in user.text
    assert "Output A: a\nOutput B: b" in user.text


def test_working_memory_clips_long_fields():
    long_case = {"inputs": "Knowledge: " + "x" * 5000 + " Question: who?", "outputs": "y"}
    _, user = build_messages(CATEGORICAL, long_case, [], [], case_chars=100)
    clipped = user.text.split("Input: ")[1].split("\n")[0]
    assert len(clipped) == 100 and clipped.startswith("Knowledge: x") and clipped.endswith("Question: who?")
    assert "…" in clipped


def test_schema_enumerates_values():
    assert judgment_schema(NUMERIC)["properties"]["value"]["enum"] == [1, 2, 3, 4, 5]
    assert judgment_schema(CATEGORICAL, 50)["properties"]["rationale"]["maxLength"] == 50


def test_run_judge_repairs_then_succeeds():
    answers = iter(["no idea", '{"rationale": "raw table", "value": "fail"}'])
    model = StubChatModel(responder=lambda m, k: next(answers))
    judgment = run_judge(model, CATEGORICAL, CASE, [PRINCIPLE], [EPISODE])
    assert judgment["value"] == "fail" and judgment["attempts"] == 2
    assert judgment["principle_ids"] == ["p-1"] and judgment["episode_ids"] == ["r1"]
    assert judgment["usage"]["total_tokens"] > 0
    assert "could not be used: no JSON object" in model.prompts[1][-1].text


async def test_unusable_answer_raises_with_model_and_raw_text():
    model = StubChatModel(responder=lambda m, k: '{"value": "maybe"}', model_name="tiny-judge")
    with pytest.raises(JudgmentParseError) as info:
        await arun_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 1})
    assert info.value.model == "tiny-judge" and info.value.raw == '{"value": "maybe"}'
    assert "tiny-judge" in str(info.value) and "maybe" in str(info.value)
    assert model.calls == 2


def _logprob_message(text, position_token, alternatives):
    tokens = []
    for piece in ['{"', "rationale", '":', ' "', "x", '",', ' "', "value", '":', ' "']:
        tokens.append({"token": piece, "logprob": 0.0})
    tokens.append(
        {
            "token": position_token,
            "logprob": math.log(alternatives[position_token]),
            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alternatives.items()],
        }
    )
    return AIMessage(text, response_metadata={"logprobs": {"content": tokens}})


def test_value_scores_from_logprobs():
    text = '{"rationale": "x", "value": "fail"}'
    message = _logprob_message(text, "fail", {"fail": 0.6, "pass": 0.2, "The": 0.1})
    scores = value_scores(CATEGORICAL, message, "fail")
    assert scores == {"pass": 0.25, "fail": 0.75}
    assert value_scores(CATEGORICAL, AIMessage(text), "fail") is None


def test_precedent_modes():
    case = {"inputs": "Count orders", "outputs": "SELECT count(*) FROM raw.orders"}
    same = {**EPISODE, "case_hash": case_hash(case), "score": 0.5}
    near = {**EPISODE, "id": "r2", "case_hash": "other", "score": 0.99}
    assert find_precedent(case, [near, same], "exact")["id"] == "r1"
    assert find_precedent(case, [near, same], "similar")["id"] == "r2"
    assert find_precedent(case, [same], "off") is None
    assert find_precedent(case, [{**same, "value": None} | {}], "exact")["id"] == "r1"
    no_value = {k: v for k, v in same.items() if k != "value"}
    assert find_precedent(case, [no_value], "exact") is None


def test_stub_returns_valid_values_for_each_kind():
    for spec, expected in ((CATEGORICAL, "pass"), (NUMERIC, 1), (PAIRWISE, "A")):
        case = {"inputs": "q", "outputs": ["a", "b"] if spec.kind == "pairwise" else "a"}
        assert run_judge(StubChatModel(), spec, case, [], [])["value"] == expected
        assert json.loads(StubChatModel().invoke("hi").text)
