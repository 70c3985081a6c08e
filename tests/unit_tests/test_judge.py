import json
import math
import re

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from memalign_graph import JudgmentParseError
from memalign_graph.judge import (
    HOSTED_CONTEXT_TOKENS,
    PROMPT_CHARS_PER_TOKEN,
    arun_judge,
    build_messages,
    context_window_of,
    find_precedent,
    judgment_schema,
    parse_judgment,
    run_judge,
    value_scores,
    working_memory,
)
from memalign_graph.spec import JudgeSpec, case_hash
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


def sections(text, tag):
    """The JSON bodies of every ``<tag>...</tag>`` section of a prompt, decoded."""
    return [json.loads(body) for body in re.findall(rf"^<{tag}>\n(.*?)\n</{tag}>$", text, re.M | re.S)]


def test_working_memory_holds_principles_episodes_and_case():
    system, user = build_messages(CATEGORICAL, CASE, [PRINCIPLE], [EPISODE])
    assert "Does the SQL follow the house rules?" in system.text
    assert "one of: pass, fail" in system.text
    assert sections(system.text, "principles") == [["Prefer the certified view over raw tables."]]
    (episode,) = sections(user.text, "episode")
    assert episode == {
        "id": "r1",
        "inputs": "Count orders",
        "outputs": "SELECT count(*) FROM raw.orders",
        "judge_value": "pass",
        "expert_value": "fail",
        "expert_feedback": "Use analytics.orders_certified.",
    }
    assert sections(user.text, "case") == [{"inputs": "List orders", "outputs": "SELECT * FROM raw.orders"}]
    assert user.text.index("<episode>") < user.text.index("Case to judge:") < user.text.index("<case>")


def test_working_memory_without_memory_has_no_sections():
    system, user = build_messages(PAIRWISE, {"inputs": "q", "outputs": ["a", "b"]}, [], [])
    assert "<principles>" not in system.text and "<episode>" not in user.text
    assert sections(user.text, "case") == [{"inputs": "q", "output_a": "a", "output_b": "b"}]


def test_structured_fields_stay_json_objects():
    case = {"inputs": {"question": "Who?", "context": ["a", "b"]}, "outputs": "x", "expectations": {"answer": "y"}}
    (shown,) = sections(build_messages(CATEGORICAL, case, [], [])[1].text, "case")
    assert shown == {"inputs": case["inputs"], "outputs": "x", "expectations": {"answer": "y"}}


# --- working memory sized to the model's context window -------------------------------------------------------------


def long_episode(n, chars):
    return {**EPISODE, "id": f"e{n}", "outputs": f"EP{n}-START " + "e" * chars + f" EP{n}-END"}


def test_whole_episodes_and_case_when_they_fit():
    case = {"inputs": "Knowledge: " + "k" * 60_000 + " Question: who?", "outputs": "y"}
    episodes = [long_episode(n, 5_000) for n in range(5)]
    memory = working_memory(CATEGORICAL, case, [PRINCIPLE], episodes)  # hosted default: 128k tokens
    assert not memory.case_clipped and memory.episodes_clipped == []
    assert sections(memory.messages[1].text, "case")[0]["inputs"] == case["inputs"]
    assert [e["outputs"] for e in sections(memory.messages[1].text, "episode")] == [e["outputs"] for e in episodes]


@pytest.mark.parametrize("window", [1_500, 4_000, 8_192])
def test_clipping_fits_the_window_and_keeps_short_fields_whole(window):
    case = {"inputs": "Knowledge: " + "k" * 60_000 + " Question: who?", "outputs": "short answer"}
    episodes = [long_episode(1, 30_000), EPISODE, long_episode(2, 30_000)]
    memory = working_memory(CATEGORICAL, case, [PRINCIPLE], episodes, context_tokens=window, answer_tokens=300)
    prompt_chars = sum(len(m.text) for m in memory.messages)
    assert prompt_chars <= (window - 300) * PROMPT_CHARS_PER_TOKEN
    assert prompt_chars > 0.9 * (window - 300) * PROMPT_CHARS_PER_TOKEN  # the budget is used, not wasted
    assert memory.case_clipped and memory.episodes_clipped == ["e1", "e2"]
    (shown,) = sections(memory.messages[1].text, "case")
    assert shown["outputs"] == "short answer"
    assert shown["inputs"].startswith("Knowledge: k") and shown["inputs"].endswith("Question: who?")
    assert "…" in shown["inputs"]
    first, whole, second = sections(memory.messages[1].text, "episode")
    assert whole["outputs"] == EPISODE["outputs"] and whole["expert_feedback"] == EPISODE["feedback"]
    for clipped, n in ((first, 1), (second, 2)):
        assert clipped["outputs"].startswith(f"EP{n}-START") and clipped["outputs"].endswith(f"EP{n}-END")
        assert clipped["id"] == f"e{n}" and clipped["expert_value"] == "fail"
    assert len(shown["inputs"]) > 2 * len(first["outputs"])  # the case at hand gets the larger share


def test_run_judge_sizes_memory_to_the_model_and_marks_clipping():
    class WindowedStub(StubChatModel):
        context_window: int = 2_000

    case = {"inputs": "q " * 20_000, "outputs": "a"}
    model = WindowedStub()
    judgment = run_judge(model, CATEGORICAL, case, [], [])
    assert judgment["clipped"] is True
    assert sum(len(m.text) for m in model.prompts[0]) <= 2_000 * PROMPT_CHARS_PER_TOKEN
    widened = StubChatModel()
    assert run_judge(widened, CATEGORICAL, case, [], [], {"context_window": 50_000})["clipped"] is False
    assert run_judge(widened, CATEGORICAL, CASE, [], [])["clipped"] is False  # hosted default
    assert context_window_of(widened) == HOSTED_CONTEXT_TOKENS and context_window_of(model) == 2_000
    with pytest.raises(ValueError, match="context_window must be a positive number of tokens, got 0"):
        run_judge(widened, CATEGORICAL, CASE, [], [], {"context_window": 0})


def test_embedded_model_states_its_window():
    from memalign_graph.llamacpp import ChatLlamaCpp

    model = ChatLlamaCpp(model_path="/nonexistent.gguf", n_ctx=16_384, n_parallel=2)  # nothing is loaded
    assert context_window_of(model) == 8_192 and context_window_of(model, 1_000) == 1_000


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


def stream(*pieces, **extra):
    """An answer with OpenAI-format log-probabilities: each piece is a token (probability 1) or
    ``(token, {candidate: probability})`` with the decoded token among the candidates."""
    tokens = []
    for piece in pieces:
        if isinstance(piece, str):
            tokens.append({"token": piece, "logprob": 0.0})
            continue
        token, alternatives = piece
        top = [{"token": t, "logprob": math.log(p)} for t, p in alternatives.items()]
        tokens.append({"token": token, "logprob": math.log(alternatives[token]), "top_logprobs": top})
    text = "".join(t["token"] for t in tokens)
    return AIMessage(text, response_metadata={"logprobs": {"content": tokens}, **extra})


def argmax(scores):
    return max(scores, key=scores.get)


def test_value_scores_from_logprobs():
    message = stream(
        '{"',
        "rationale",
        '":',
        ' "',
        "x",
        '",',
        ' "',
        "value",
        '":',
        ' "',
        ("fail", {"fail": 0.6, "pass": 0.2, "The": 0.1}),
        '"}',
    )
    assert value_scores(CATEGORICAL, message) == {"pass": 0.25, "fail": 0.75}
    assert value_scores(CATEGORICAL, AIMessage(message.text)) is None


def test_value_scores_read_fenced_json():
    """The embedded model's habit: a code fence, then JSON whose rationale mentions the other label."""
    message = stream(
        "```", "json", "\n", "{\n", ' "', "rationale", '":', ' "',
        "The", " value", ' \\"', "pass", '\\"', " is", " wrong", '",\n',
        ' "', "value", '":', (' "fail', {' "fail': 0.7, ' "pass': 0.3}), '"\n', "}", "\n```",
    )  # fmt: skip
    assert parse_judgment(CATEGORICAL, message.text)[0] == "fail"
    assert value_scores(CATEGORICAL, message) == {"pass": 0.3, "fail": 0.7}


def test_value_scores_skip_a_value_key_inside_the_rationale():
    message = stream(
        '{"rationale": "', ("I", {"I": 0.9, "pass": 0.1}), ' would write \\"value\\": \\"',
        ("pass", {"pass": 0.99, "fail": 0.01}),
        '\\" but no", "value": "', ("fail", {"fail": 0.8, "pass": 0.15, "F": 0.05}), '"}',
    )  # fmt: skip
    scores = value_scores(CATEGORICAL, message)
    assert argmax(scores) == parse_judgment(CATEGORICAL, message.text)[0] == "fail"
    assert scores == {"pass": 0.15, "fail": 0.85}  # "F" can only begin "fail" (case-insensitive)


@pytest.mark.parametrize(
    "pieces, expected",
    [
        # the value split over tokens: the decision is at its first token
        (['{"value": "', ("f", {"f": 0.55, "p": 0.4, "x": 0.05}), "ail", '"}'], {"pass": 0.4211, "fail": 0.5789}),
        # the opening quote and the value's start in one token
        (['{"value":', (' "p', {' "p': 0.9, ' "f': 0.1}), "ass", '"}'], {"pass": 0.9, "fail": 0.1}),
        # no space, whole-label tokens that carry the closing quote ("pa" can only begin "pass")
        (['{"value":"', ('pass"', {'pass"': 0.6, 'fail"': 0.3, "pa": 0.1}), "}"], {"pass": 0.7, "fail": 0.3}),
        # upper case, as parse_judgment accepts it
        (['{"value": "', ("FAIL", {"FAIL": 0.5, "Pass": 0.25, "fail": 0.25}), '"}'], {"pass": 0.25, "fail": 0.75}),
    ],
)
def test_value_scores_multi_token_values(pieces, expected):
    message = stream(*pieces)
    scores = value_scores(CATEGORICAL, message)
    assert scores == expected
    assert argmax(scores) == parse_judgment(CATEGORICAL, message.text)[0]


def test_value_scores_values_sharing_a_prefix_follow_the_chain_rule():
    ten = JudgeSpec.numeric("ten", "Score it.", 1, 10)
    message = stream('{"rationale": "x", "value": ', ("1", {"1": 0.7, "9": 0.3}), ("0", {"0": 0.8, ",": 0.2}), "}")
    scores = value_scores(ten, message)
    assert parse_judgment(ten, message.text)[0] == 10 and argmax(scores) == "10"
    assert scores["10"] == pytest.approx(0.56) and scores["1"] == pytest.approx(0.14) and scores["9"] == 0.3
    labels = JudgeSpec.categorical("p", "Judge it.", ["pass", "partial", "fail"])
    message = stream('{"value": "', ("pa", {"pa": 0.9, "fail": 0.1}), ("rt", {"ss": 0.4, "rt": 0.6}), 'ial"}')
    assert value_scores(labels, message) == {"pass": 0.36, "partial": 0.54, "fail": 0.1}


def test_value_scores_follow_bytes_when_characters_split_across_tokens():
    """llama.cpp reports a multi-byte character cut between tokens as two partial tokens (with their bytes)."""
    e_acute = "é".encode()
    tokens = [
        {"token": '{"rationale": "caf', "logprob": 0.0, "bytes": list(b'{"rationale": "caf')},
        {"token": "\ufffd", "logprob": 0.0, "bytes": [e_acute[0]]},
        {"token": "\ufffd", "logprob": 0.0, "bytes": [e_acute[1]]},
        {"token": '", "value": "', "logprob": 0.0, "bytes": list(b'", "value": "')},
        {
            "token": "pass",
            "logprob": math.log(0.6),
            "bytes": list(b"pass"),
            "top_logprobs": [{"token": "pass", "logprob": math.log(0.6)}, {"token": "fail", "logprob": math.log(0.4)}],
        },
        {"token": '"}', "logprob": 0.0, "bytes": list(b'"}')},
    ]
    message = AIMessage('{"rationale": "café", "value": "pass"}', response_metadata={"logprobs": {"content": tokens}})
    assert value_scores(CATEGORICAL, message) == {"pass": 0.6, "fail": 0.4}


def test_value_scores_without_a_readable_value_is_none():
    assert value_scores(CATEGORICAL, stream("I think ", ("pass", {"pass": 0.9, "fail": 0.1}))) is None
    assert value_scores(CATEGORICAL, stream('{"value": "', ("maybe", {"maybe": 0.9, "perhaps": 0.1}), '"}')) is None


class ScriptedModel(BaseChatModel):
    """Answers with the given messages in turn (log-probabilities included), recording each prompt."""

    answers: list
    prompts: list = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.prompts.append(messages)
        return ChatResult(generations=[ChatGeneration(message=self.answers[len(self.prompts) - 1])])


def fenced(value, other, p_value=0.5, p_other=0.3):
    quote = '"' if isinstance(value, str) else ""
    head = '```json\n{"rationale": "the value is \\"' + str(other) + '\\"?", "value": ' + quote
    return stream(head, (str(value), {str(value): p_value, str(other): p_other}), quote + "}\n```")


@pytest.mark.parametrize("spec, value, other", [(CATEGORICAL, "fail", "pass"), (NUMERIC, 4, 2), (PAIRWISE, "B", "A")])
def test_run_judge_scores_agree_with_the_value(spec, value, other):
    """Scores come from the final answer's own token stream: their argmax is the value judged."""
    answers = [AIMessage("not json"), fenced(value, other)]
    case = {"inputs": "q", "outputs": ["a", "b"] if spec.kind == "pairwise" else "a"}
    judgment = run_judge(ScriptedModel(answers=answers), spec, case, [], [], {"pairwise_orders": "one"})
    assert judgment["value"] == value and judgment["attempts"] == 2
    assert argmax(judgment["scores"]) == str(value) and sum(judgment["scores"].values()) == pytest.approx(1)


# --- pairwise: both orders ------------------------------------------------------------------------------------------


def prefers(word):
    """A pairwise judge without position bias: it prefers the output containing ``word``."""

    def respond(messages, kwargs):
        (case,) = sections(messages[-1].text, "case")
        value = "A" if word in case["output_a"] else "B" if word in case["output_b"] else "tie"
        return json.dumps({"rationale": f"shown {case['output_a']} first", "value": value})

    return respond


PAIR = {"inputs": "Which reply is better?", "outputs": ["a good reply", "a poor reply"]}


def test_pairwise_judges_both_orders_and_keeps_a_consistent_value():
    model = StubChatModel(responder=prefers("good"))
    judgment = run_judge(model, PAIRWISE, PAIR, [], [])
    assert judgment["value"] == "A" and model.calls == 2
    assert [sections(p[-1].text, "case")[0]["output_a"] for p in model.prompts] == ["a good reply", "a poor reply"]
    assert [(o["shown"], o["answer"], o["value"]) for o in judgment["orders"]] == [("AB", "A", "A"), ("BA", "B", "A")]
    assert judgment["rationale"] == "shown a good reply first" and judgment["attempts"] == 2
    single = run_judge(StubChatModel(responder=prefers("good")), PAIRWISE, PAIR, [], [], {"pairwise_orders": "one"})
    assert judgment["usage"]["total_tokens"] == 2 * single["usage"]["total_tokens"] > 0


async def test_position_bias_becomes_a_tie_with_both_answers_kept():
    model = StubChatModel(responder=lambda m, k: json.dumps({"rationale": "the first is better", "value": "A"}))
    judgment = await arun_judge(model, PAIRWISE, PAIR, [], [])
    assert judgment["value"] == "tie" and model.calls == 2
    assert [(o["shown"], o["answer"], o["value"]) for o in judgment["orders"]] == [("AB", "A", "A"), ("BA", "A", "B")]
    assert "Order-inconsistent" in judgment["rationale"] and "the first is better" in judgment["rationale"]


def test_pairwise_scores_average_both_orders_in_the_case_labels():
    model = ScriptedModel(answers=[fenced("A", "B", 0.9, 0.1), fenced("A", "B", 0.6, 0.4)])
    judgment = run_judge(model, PAIRWISE, PAIR, [], [])
    assert judgment["value"] == "tie"
    assert judgment["orders"][0]["scores"] == {"A": 0.9, "B": 0.1, "tie": 0.0}
    assert judgment["orders"][1]["scores"] == {"B": 0.6, "A": 0.4, "tie": 0.0}
    assert judgment["scores"] == {"A": 0.65, "B": 0.35, "tie": 0.0}


def test_pairwise_one_order_when_asked_and_bad_setting_named():
    model = StubChatModel(responder=lambda m, k: json.dumps({"rationale": "r", "value": "A"}))
    judgment = run_judge(model, PAIRWISE, PAIR, [], [], {"pairwise_orders": "one"})
    assert judgment["value"] == "A" and model.calls == 1 and "orders" not in judgment
    with pytest.raises(ValueError, match="pairwise_orders must be 'both' or 'one', got 'three'"):
        run_judge(model, PAIRWISE, PAIR, [], [], {"pairwise_orders": "three"})


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
        assert run_judge(StubChatModel(), spec, case, [], [], {"pairwise_orders": "one"})["value"] == expected
        assert json.loads(StubChatModel().invoke("hi").text)
