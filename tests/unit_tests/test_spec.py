import pytest

from memalign_graph import JudgeSpec, RecordError, read_jsonl
from memalign_graph.spec import case_hash, parse_record, record_hash
from tests.conftest import CATEGORICAL, NUMERIC, PAIRWISE


def test_spec_kinds_and_values():
    assert CATEGORICAL.values == ["pass", "fail"]
    assert NUMERIC.values == [1, 2, 3, 4, 5]
    assert PAIRWISE.values == ["A", "B", "tie"]
    assert JudgeSpec.from_dict(NUMERIC.to_dict()) == NUMERIC
    assert JudgeSpec.from_dict(PAIRWISE.to_dict()) == PAIRWISE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "categorical", "labels": ("pass",)}, "two or more distinct labels"),
        ({"kind": "categorical", "labels": ("a", "a")}, "two or more distinct labels"),
        ({"kind": "numeric", "scale": (5, 1)}, "low < high"),
        ({"kind": "numeric"}, r"needs scale=\(low, high\)"),
        ({"kind": "ranking"}, "unknown judgment kind"),
    ],
)
def test_spec_rejects_bad_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JudgeSpec(name="j", criterion="c", **kwargs)


def test_coerce_value_per_kind():
    assert CATEGORICAL.coerce_value(" PASS ") == "pass"
    assert NUMERIC.coerce_value("4") == 4
    assert NUMERIC.coerce_value(3.0) == 3
    assert PAIRWISE.coerce_value("b") == "B"
    with pytest.raises(RecordError, match="not one of: pass, fail"):
        CATEGORICAL.coerce_value("maybe", "cases.jsonl:2")
    with pytest.raises(RecordError, match="not an integer from 1 to 5"):
        NUMERIC.coerce_value(6)
    with pytest.raises(RecordError, match="not an integer from 1 to 5"):
        NUMERIC.coerce_value(True)


def test_parse_record_requirements():
    with pytest.raises(RecordError, match="exactly two candidates"):
        parse_record({"inputs": "q", "outputs": "a"}, PAIRWISE, where="r")
    with pytest.raises(RecordError, match="needs the expert's 'value' and/or 'feedback'"):
        parse_record({"id": "x", "inputs": "q", "outputs": "a"}, CATEGORICAL, where="r", feedback=True)
    with pytest.raises(RecordError, match="unknown field"):
        parse_record({"inputs": "q", "outputs": "a", "score": 1}, CATEGORICAL, where="r")
    with pytest.raises(RecordError, match="'inputs' is missing"):
        parse_record({"outputs": "a"}, CATEGORICAL, where="r")
    record = parse_record(
        {"id": 7, "inputs": {"q": 1}, "outputs": "a", "feedback": "too terse"}, CATEGORICAL, where="r", feedback=True
    )
    assert record == {"id": "7", "inputs": {"q": 1}, "outputs": "a", "feedback": "too terse"}


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "fb.jsonl"
    path.write_text('{"id": "a", "inputs": "q", "outputs": "x", "value": "pass"}\n\n{"id": "b", "inputs": "q"\n')
    with pytest.raises(RecordError, match=r"fb.jsonl:3: not valid JSON"):
        read_jsonl(path, CATEGORICAL, feedback=True)
    path.write_text(
        '{"id": "a", "inputs": "q", "outputs": "x", "value": "pass"}\n'
        '{"id": "a", "inputs": "q", "outputs": "y", "value": "fail"}\n'
    )
    with pytest.raises(RecordError, match=r"fb.jsonl:2.*duplicate id 'a' \(first on line 1\)"):
        read_jsonl(path, CATEGORICAL, feedback=True)
    path.write_bytes(b'{"id": "a", "inputs": "q\xff", "outputs": "x", "value": "pass"}\n')
    with pytest.raises(RecordError, match=r"fb.jsonl:1: not valid UTF-8"):
        read_jsonl(path, CATEGORICAL, feedback=True)
    path.write_text('{"id": "a", "inputs": "q", "outputs": "x", "value": "maybe"}\n')
    with pytest.raises(RecordError, match=r"fb.jsonl:1 \(id a\): value 'maybe'"):
        read_jsonl(path, CATEGORICAL, feedback=True)


def test_read_jsonl_assigns_line_ids_to_cases(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"inputs": "q1", "outputs": "a"}\n\n{"inputs": "q2", "outputs": "b", "id": "named"}\n')
    assert [r["id"] for r in read_jsonl(path, CATEGORICAL)] == ["line-1", "named"]


def test_hashes():
    a = {"inputs": "What is  SQL?", "outputs": "A language"}
    b = {"inputs": "what is sql?", "outputs": "a   language"}
    assert case_hash(a) == case_hash(b)
    assert case_hash(a) != case_hash({"inputs": "What is SQL?", "outputs": "A database"})
    assert record_hash({**a, "value": "pass"}) != record_hash({**a, "value": "fail"})
