"""appliance/engine/text.py: StopScanner turns streamed token bytes into safe text."""

from __future__ import annotations

import pytest

from appliance.engine.text import StopScanner


def _run(stops: tuple[str, ...], pieces: list[bytes]) -> tuple[list[str], str, bool]:
    """Feed ``pieces`` one by one: (what each feed returned, what flush returned, stopped)."""
    scanner = StopScanner(stops)
    emitted = [scanner.feed(piece) for piece in pieces]
    return emitted, scanner.flush(), scanner.stopped


def _split_bytes(text: str) -> list[bytes]:
    """Every byte of ``text`` as its own piece, as a byte-level tokenizer may produce them."""
    return [bytes([b]) for b in text.encode()]


# (stops, pieces, what each feed returns, what flush returns, stopped)
CASES = [
    pytest.param((), [b"Hello", b", ", b"world"], ["Hello", ", ", "world"], "", False, id="no-stops"),
    pytest.param(("",), [b"Hi", b"!"], ["Hi", "!"], "", False, id="empty-stop-ignored"),
    pytest.param(("\n\n",), [b"one\n\ntwo"], ["one"], "", True, id="stop-inside-one-piece"),
    pytest.param(("<|im_end|>",), [b"<|im_end|>"], [""], "", True, id="stop-is-the-whole-piece"),
    pytest.param(
        ("<|im_end|>",),
        [b"Done", b"<|im", b"_end", b"|>", b"more"],
        ["Done", "", "", "", ""],
        "",
        True,
        id="stop-split-across-pieces",
    ),
    pytest.param(
        ("STOP",),
        [b"ab", b"ST", b"OP", b"cd"],
        ["ab", "", "", ""],
        "",
        True,
        id="stop-split-in-two",
    ),
    pytest.param(
        ("STOP",),
        [b"ab", b"ST", b"OR", b"E"],
        ["ab", "", "STOR", "E"],
        "",
        False,
        id="partial-held-then-released",
    ),
    pytest.param(
        ("STOP",),
        [b"ab", b"STO"],
        ["ab", ""],
        "STO",
        False,
        id="partial-released-by-flush",
    ),
    pytest.param(
        ("aab",),
        [b"a", b"a", b"a", b"b"],
        ["", "", "a", ""],
        "",
        True,
        id="overlapping-partial",
    ),
    pytest.param(
        ("END", "xy"),
        [b"12x", b"yEND"],
        ["12", ""],
        "",
        True,
        id="earliest-of-several-stops",
    ),
    pytest.param(
        ("xyz", "yz!"),
        [b"axy", b"z!"],
        ["a", ""],
        "",
        True,
        id="longest-held-prefix-wins",
    ),
    pytest.param(
        ("\n",),
        [b"line", b"\n", b"next"],
        ["line", "", ""],
        "",
        True,
        id="single-char-stop",
    ),
]


@pytest.mark.parametrize(("stops", "pieces", "emitted", "flushed", "stopped"), CASES)
def test_stop_scanner(
    stops: tuple[str, ...], pieces: list[bytes], emitted: list[str], flushed: str, stopped: bool
) -> None:
    assert _run(stops, pieces) == (emitted, flushed, stopped)


# (text, stops): the text streamed one byte per piece; every emitted chunk must be whole characters.
MULTIBYTE = [
    ("café", ()),
    ("café", ("STOP",)),
    ("😀 ok", ()),
    ("ü😀é🌍", ("🌍",)),
    ("日本語のテキスト", ("テ",)),
    ("e\u0301 combining", ()),
]


@pytest.mark.parametrize(("text", "stops"), MULTIBYTE)
def test_multibyte_characters_are_never_emitted_half(text: str, stops: tuple[str, ...]) -> None:
    emitted, flushed, _ = _run(stops, _split_bytes(text))

    for chunk in [*emitted, flushed]:
        assert "\ufffd" not in chunk
        chunk.encode("utf-8")  # no lone surrogates either
    expected = text
    for stop in stops:
        expected = expected.split(stop)[0]
    assert "".join(emitted) + flushed == expected


@pytest.mark.parametrize(
    ("pieces", "emitted"),
    [
        (["é".encode()[:1], "é".encode()[1:]], ["", "é"]),
        ([b"a" + "😀".encode()[:2], "😀".encode()[2:] + b"b"], ["a", "😀b"]),
        (_split_bytes("😀"), ["", "", "", "😀"]),
    ],
)
def test_split_character_waits_for_its_last_byte(pieces: list[bytes], emitted: list[str]) -> None:
    assert _run((), pieces) == (emitted, "", False)


def test_stop_string_with_multibyte_characters_split_across_pieces() -> None:
    stop = "«fin»"
    emitted, flushed, stopped = _run((stop,), [b"ok ", *_split_bytes(stop), b"after"])
    assert ("".join(emitted), flushed, stopped) == ("ok ", "", True)


@pytest.mark.parametrize(
    ("pieces", "flushed"),
    [
        ([b"abc", "é".encode()[:1]], "\ufffd"),  # generation ended mid-character
        ([b"\xff"], None),  # invalid bytes are replaced as they come
    ],
)
def test_flush_of_incomplete_or_invalid_bytes(pieces: list[bytes], flushed: str | None) -> None:
    emitted, rest, _ = _run((), pieces)
    if flushed is None:
        assert "".join(emitted) + rest == "\ufffd"
    else:
        assert rest == flushed


def test_nothing_after_a_stop() -> None:
    scanner = StopScanner(("</s>",))
    assert scanner.feed(b"a</s>b") == "a"
    assert scanner.stopped
    assert scanner.feed(b"more") == ""
    assert scanner.flush() == ""


def test_flush_releases_held_text_once() -> None:
    scanner = StopScanner(("<|im_end|>",))
    assert scanner.feed(b"x<|im") == "x"
    assert scanner.flush() == "<|im"
    assert scanner.flush() == ""
    assert not scanner.stopped


@pytest.mark.parametrize(
    ("pieces", "stops", "matched"),
    [([b"one ", b"two"], ("two", "one"), "one"), ([b"ab", b"c"], ("bc", "x"), "bc"),
     ([b"abc"], ("x",), None), ([b"abc"], (), None)],
)  # fmt: skip
def test_the_stop_string_that_ended_the_text_is_named(
    pieces: list[bytes], stops: tuple[str, ...], matched: str | None
) -> None:
    """The first in the text, whichever the client listed first (Anthropic's stop_sequence says it)."""
    scanner = StopScanner(stops)
    for piece in pieces:
        scanner.feed(piece)
    assert scanner.matched == matched
