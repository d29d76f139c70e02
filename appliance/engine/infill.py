"""Fill-in-the-middle prompts, assembled as llama-server's format_prompt_infill does (tools/server/
server-common.cpp), from the model's FIM token ids (llama_vocab_fim_*: the GGUF's
tokenizer.ggml.fim_*_token_id, or the older prefix/suffix/middle names, or llama.cpp's guess from the
tokens' texts).

The order is PSM (prefix, suffix, middle), llama-server's default; with the repository tokens the other
files come first, in the repo-level pattern of https://arxiv.org/pdf/2409.12186:

    <FIM_REP>myproject\\n<FIM_SEP>{filename}\\n{text}...<FIM_SEP>filename\\n
    <FIM_PRE>{prefix}{prompt}<FIM_SUF>{suffix}<FIM_MID>

(llama-server's README puts ``prompt`` after FIM_MID; its code, followed here, ends the prefix with it.)
Without them each file is set off by a "--- snippet ---" line. The prefix keeps its last 3/4 of a batch
of tokens, the suffix its first 1/4 (less the prompt), and the files whatever the context leaves after a
batch and twice the reply's budget, the latest kept: llama-server's budget, so the part that matters most
(the text around the cursor) is read whole and in one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.backend import Infill
from appliance.errors import InvalidRequest

DEFAULT_REPLY_TOKENS = 256
"""The reply budget the files' share is computed with when a request sets none (llama-server uses its
own -n, -1 by default)."""
_SNIPPET = "\n\n--- snippet ---\n\n"  # llama-server's separator of files, for a model without FIM_SEP


@dataclass(frozen=True)
class FimTokens:
    """A model's FIM token ids; None where it has none."""

    pre: int | None
    suf: int | None
    mid: int | None
    rep: int | None = None  # the repository's name follows
    sep: int | None = None  # a file's name and text follow

    def missing(self) -> list[str]:
        """The names of the three tokens FIM needs that the model lacks."""
        named = (("fim_pre", self.pre), ("fim_suf", self.suf), ("fim_mid", self.mid))
        return [name for name, token in named if token is None]


def infill_tokens(
    tokenize: Callable[[str], list[int]],
    fim: FimTokens,
    infill: Infill,
    *,
    bos: int | None,
    n_batch: int,
    n_ctx: int,
    reply_tokens: int,
) -> list[int]:
    """The prompt of ``infill`` for a model with ``fim`` (all three of pre, suf, mid), as llama-server
    builds it: ``tokenize`` reads client text (no special tokens parsed), ``bos`` is put before the
    prefix when the model adds one, ``n_batch`` bounds the prefix and suffix, ``n_ctx`` (one slot's)
    less a batch and twice ``reply_tokens`` bounds the other files."""
    assert fim.pre is not None and fim.suf is not None and fim.mid is not None
    extra: list[int] = []
    if fim.rep is not None:
        extra += [fim.rep, *tokenize("myproject\n")]
    for filename, text in infill.extra:
        if fim.sep is not None:
            extra += [fim.sep, *tokenize(filename + "\n")]
        else:
            extra += tokenize(_SNIPPET)
        extra += tokenize(text)
    if fim.sep is not None:
        extra += [fim.sep, *tokenize("filename\n")]  # the current file's name is not known

    prefix, suffix, prompt = tokenize(infill.prefix), tokenize(infill.suffix), tokenize(infill.prompt)
    prefix_take = min(len(prefix), 3 * (n_batch // 4))
    suffix_take = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    extra_take = min(max(0, n_ctx - n_batch - 2 * reply_tokens), len(extra))

    head = [fim.pre, *prefix[len(prefix) - prefix_take :], *prompt]
    tail = [fim.suf, *suffix[:suffix_take]]
    if bos is not None:
        head.insert(0, bos)
    # llama-server puts the files before everything, its BOS included.
    return [*extra[len(extra) - extra_take :], *head, *tail, fim.mid]


def infill_prompt(model: Any, model_id: str, infill: Infill, max_tokens: int | None) -> list[int]:
    """``infill``'s prompt for ``model`` (appliance.engine.llama.LlamaModel); InvalidRequest naming the
    model and the tokens it lacks when it has no FIM tokens. Reads only the vocabulary (any thread)."""
    fim = model.fim_tokens()
    missing = fim.missing()
    if missing:
        raise InvalidRequest(
            f"model {model_id} cannot fill in the middle: its vocabulary has no "
            f"{', '.join(missing)} token{'s' if len(missing) > 1 else ''} (GGUF keys "
            "tokenizer.ggml.fim_pre_token_id, fim_suf_token_id, fim_mid_token_id)",
            param="suffix",
        )

    def tokenize(text: str) -> list[int]:
        return list(model.tokenize(text, add_special=False, parse_special=False)) if text else []

    return infill_tokens(
        tokenize,
        fim,
        infill,
        bos=model.bos_token if model.add_bos else None,
        # llama-server's budgets, from its n_batch (2048 by default, as ours): the code around the cursor
        # gets at most that, the repository's files what is left of the slot. At most half the slot, so a
        # slot no larger than a batch still has room for the files.
        n_batch=min(model.options.n_batch, model.n_ctx_per_seq // 2),
        n_ctx=model.n_ctx_per_seq,
        reply_tokens=max_tokens if max_tokens is not None else DEFAULT_REPLY_TOKENS,
    )
