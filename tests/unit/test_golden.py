"""Golden sets: each check passes what it should and fails what it should, and a bad file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.evaluation.drift import DriftError, chunks_of
from appliance.evaluation.golden import Expect, GoldenError, builtin_golden, judge, load_golden


@pytest.mark.parametrize(
    ("expect", "reply", "why"),
    [
        ({"contains": "Paris"}, "It is paris.", None),
        ({"contains": "Paris"}, "It is Lyon.", "'Paris' missing"),
        ({"contains": ["red", "blue"]}, "Red, yellow and blue", None),
        ({"contains": ["red", "blue"]}, "Red and yellow", "'blue' missing"),
        ({"contains": "HELLO", "case_sensitive": True}, "Hello", "'HELLO' missing"),
        ({"any_of": ["H2O", "H₂O"]}, "Water is H₂O.", None),
        ({"any_of": ["H2O", "H₂O"]}, "Water is wet.", "none of 'H2O', 'H₂O'"),
        (
            {"contains": "positive", "not_contains": "negative"},
            "Positive, not negative",
            "'negative' present",
        ),
        ({"regex": r"\b5\b"}, "The answer is 5.", None),
        ({"regex": r"\b5\b"}, "The answer is 15.", r"no match for /\b5\b/"),
        ({"regex": r"^\W*yes\W*$"}, " Yes. ", None),
        ({"equals": "yes"}, "  YES \n", None),
        ({"equals": "yes"}, "yes indeed", "not 'yes'"),
        ({"json": True}, '{"a": 1}', None),
        ({"json": True}, "{a: 1}", "not JSON"),
        ({"json": {"age": 3}}, '{"name": "Tom", "age": 3}', None),
        ({"json": {"age": 3}}, '{"name": "Tom", "age": "3"}', "JSON 'age' is '3', not 3"),
        ({"json": {"age": 3}}, '{"name": "Tom"}', "JSON lacks 'age'"),
        ({"json": {"age": 3}}, "[3]", "not a JSON object"),
    ],
)
def test_checks(expect: dict[str, object], reply: str, why: str | None) -> None:
    assert Expect.model_validate(expect).failure(reply) == why


def _golden(tmp_path: Path, *lines: str, name: str = "golden.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_file_reads_with_ids_comments_and_blank_lines(tmp_path: Path) -> None:
    path = _golden(
        tmp_path,
        "// a comment",
        '{"id": "a", "prompt": "Say hi", "system": "Be brief.", "expect": {"contains": "hi"}}',
        "",
        '{"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8, "format": "json",'
        ' "expect": {"json": true}}',
    )
    (first_id, first), (second_id, second) = load_golden(path)
    assert (first_id, second_id) == ("a", "line 4")
    assert first.chat() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]
    assert second.max_tokens == 8 and second.json_schema() == {"type": "object"}
    assert judge(first_id, first, "Hi there").passed
    outcome = judge(first_id, first, "Bye")
    assert not outcome.passed and outcome.why == "'hi' missing"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "hi"}', "line 1: expect: Field required"),
        (
            '{"prompt": "hi", "messages": [], "expect": {"contains": "x"}}',
            "line 1: give either prompt or messages",
        ),
        ('{"expect": {"contains": "x"}}', "line 1: give either prompt or messages"),
        ('{"prompt": "hi", "expect": {}}', "line 1: expect: expect names no check"),
        ('{"prompt": "hi", "expect": {"regex": "("}}', "line 1: expect.regex: not a regular expression"),
        (
            '{"prompt": "hi", "expect": {"contain": "x"}}',
            "line 1: expect.contain: Extra inputs are not permitted",
        ),
        ('{"prompt": "hi", "max_tokens": 0, "expect": {"contains": "x"}}', "line 1: max_tokens:"),
        ('{"prompt": "hi", "format": "yaml", "expect": {"contains": "x"}}', "line 1: format"),
        ("not json", "line 1: Invalid JSON"),
    ],
)
def test_a_bad_case_is_one_line_naming_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _golden(tmp_path, line)
    with pytest.raises(GoldenError) as caught:
        load_golden(path)
    assert str(caught.value).startswith(f"{path} {message}")


def test_bad_files(tmp_path: Path) -> None:
    case = '{"id": "a", "prompt": "hi", "expect": {"contains": "x"}}'
    for path, message in [
        (_golden(tmp_path, case, case), "case id 'a' is used twice"),
        (_golden(tmp_path, "// only a comment", name="empty.jsonl"), "holds no cases"),
        (tmp_path / "missing.jsonl", "cannot read"),
    ]:
        with pytest.raises(GoldenError, match=message):
            load_golden(path)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GoldenError, match="not UTF-8"):
        load_golden(binary)


def test_the_builtin_golden_set_reads() -> None:
    cases = load_golden(builtin_golden())
    assert len(cases) >= 20
    assert any(case.format is not None for _, case in cases)


def test_chunks_start_with_bos_and_drop_the_ragged_end() -> None:
    tokens = list(range(100, 150))
    assert chunks_of(tokens, 16, bos=1) == [
        [1, *range(101, 116)],
        [1, *range(117, 132)],
        [1, *range(133, 148)],
    ]
    assert chunks_of(tokens, 25, bos=None) == [tokens[:25], tokens[25:]]
    with pytest.raises(DriftError, match="the text is 50 tokens long; drift needs at least one chunk of 64"):
        chunks_of(tokens, 64, bos=1)
    with pytest.raises(DriftError, match="too short"):
        chunks_of(tokens, 8, bos=1)
