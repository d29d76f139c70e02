"""Token utilities: llama-server's over a model's vocabulary (/tokenize's mixed content of texts and token
ids, /detokenize's pieces, the check that keeps ids llama.cpp would read out of bounds from it), and the
prefix two token sequences share (the KV cache a request can reuse)."""

from __future__ import annotations

from typing import Any

from appliance.errors import InvalidRequest


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens ``a`` and ``b`` share from their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def check_token_ids(n_vocab: int, tokens: list[int], param: str) -> None:
    """InvalidRequest unless every id is in the vocabulary: llama.cpp indexes its tables with them
    unchecked (an id out of range reads past them, or aborts)."""
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is outside the vocabulary (0 to {n_vocab - 1})", param=param)


def tokenize_mixed(
    model: Any, content: str | list[str | int], *, add_special: bool, parse_special: bool
) -> list[int]:
    """``content`` as token ids, as llama-server's tokenize_mixed reads it: a text, or a list of texts and
    ids in order (ids kept as they are, once checked); BOS and the like only before the first item, and
    only when it is a text. Reads only the vocabulary (any thread)."""
    items = [content] if isinstance(content, str) else content
    out: list[int] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            out += model.tokenize(item, add_special=add_special and index == 0, parse_special=parse_special)
        else:
            check_token_ids(model.n_vocab, [item], "content")
            out.append(item)
    return out


def token_pieces(model: Any, tokens: list[int]) -> list[bytes]:
    """The bytes each token writes, special tokens as their text (llama-server's common_token_to_piece);
    InvalidRequest for an id outside the vocabulary."""
    check_token_ids(model.n_vocab, tokens, "tokens")
    return [model.piece(token, special=True) for token in tokens]
