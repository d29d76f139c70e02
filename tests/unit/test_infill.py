"""Fill-in-the-middle and rerank prompts as llama-server assembles them (format_prompt_infill,
format_prompt_rerank), over a tokenizer that writes one token per character (its code point + 1000), so
each expected prompt can be written out by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from appliance.backend import Infill
from appliance.engine.infill import FimTokens, infill_tokens
from appliance.engine.rerank import rerank_prompts, rerank_tokens
from appliance.errors import ContextOverflow, InvalidRequest

PRE, SUF, MID, REP, SEP, BOS, EOS = 1, 2, 3, 4, 5, 6, 7
FULL = FimTokens(PRE, SUF, MID, REP, SEP)


def chars(text: str) -> list[int]:
    return [1000 + ord(c) for c in text]


def build(infill: Infill, fim: FimTokens = FULL, *, bos: int | None = None, n_batch: int = 512,
          n_ctx: int = 4096, reply: int = 16) -> list[int]:  # fmt: skip
    return infill_tokens(chars, fim, infill, bos=bos, n_batch=n_batch, n_ctx=n_ctx, reply_tokens=reply)


def test_prefix_suffix_middle_with_the_repository_pattern() -> None:
    got = build(Infill("ab", "cd", extra=(("u.py", "xy"),)))
    assert got == [REP, *chars("myproject\n"), SEP, *chars("u.py\n"), *chars("xy"),
                   SEP, *chars("filename\n"), PRE, *chars("ab"), SUF, *chars("cd"), MID]  # fmt: skip


def test_without_the_repository_tokens_files_are_snippets_and_the_prompt_ends_the_prefix() -> None:
    got = build(
        Infill("ab", "cd", extra=(("u.py", "xy"), ("v.py", "z")), prompt="p"), FimTokens(PRE, SUF, MID)
    )
    snippet = chars("\n\n--- snippet ---\n\n")
    assert got == [*snippet, *chars("xy"), *snippet, *chars("z"), PRE, *chars("abp"), SUF, *chars("cd"), MID]


def test_bos_goes_before_the_prefix_after_the_files() -> None:
    got = build(Infill("a", "b", extra=(("f", "x"),)), FimTokens(PRE, SUF, MID), bos=BOS)
    assert got.index(BOS) == got.index(PRE) - 1 and got[-1] == MID


def test_the_prefix_keeps_its_end_and_the_suffix_its_start_within_a_batch() -> None:
    prefix, suffix = "p" * 100 + "END", "START" + "s" * 100
    got = build(Infill(prefix, suffix), FimTokens(PRE, SUF, MID), n_batch=64)
    # 3/4 of the batch for the prefix, 1/4 less 2 for the suffix (llama-server's split).
    assert got[: 1 + 48] == [PRE, *chars(prefix[-48:])]
    assert got[49:] == [SUF, *chars(suffix[:14]), MID]


def test_files_get_what_the_context_leaves_the_latest_kept() -> None:
    infill = Infill("a", "b", extra=(("old", "o" * 50), ("new", "n" * 50)))
    got = build(infill, FimTokens(PRE, SUF, MID), n_batch=16, n_ctx=16 + 2 * 4 + 30, reply=4)
    files = got[: got.index(PRE)]
    assert len(files) == 30 and files == chars("n" * 30)


@dataclass
class Vocab:
    """What rerank_tokens reads of a model, with the pair-encoding switches of a BERT-like vocabulary."""

    rerank_template: str | None = None
    add_bos: bool = True
    add_eos: bool = True
    add_sep: bool = False
    bos_token: int = BOS
    eos_token: int = EOS
    sep_token: int = SEP
    reranker: bool = True
    rank_limit: int = 100

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        assert not add_special
        if parse_special and text.startswith("<s>"):
            return [99, *chars(text[3:])]
        return chars(text)


def test_a_rerank_template_takes_the_query_and_document_as_plain_text() -> None:
    vocab = Vocab(rerank_template="<s>Q:{query} D:{document}!")
    assert rerank_tokens(vocab, "<s>q", "d") == [
        99,
        *chars("Q:"),
        *chars("<s>q"),
        *chars(" D:"),
        *chars("d!"),
    ]


def test_without_a_template_the_pair_is_encoded_as_the_vocabulary_asks() -> None:
    assert rerank_tokens(Vocab(), "q", "d") == [BOS, *chars("q"), EOS, *chars("d"), EOS]
    sep = Vocab(add_bos=False, add_eos=False, add_sep=True)
    assert rerank_tokens(sep, "q", "d") == [*chars("q"), SEP, *chars("d")]


def test_a_model_that_is_not_a_reranker_or_a_pair_too_long_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="m is not a reranker"):
        rerank_prompts(Vocab(reranker=False), "m", "q", ["d"])
    with pytest.raises(ContextOverflow, match="document 1 take"):
        rerank_prompts(Vocab(rank_limit=10), "m", "q", ["d", "x" * 20])
