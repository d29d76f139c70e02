"""A query and a document as one reranker prompt, as llama-server's format_prompt_rerank builds it
(tools/server/server-common.cpp): through the model's ``rerank`` chat template when its GGUF has one
(tokenizer.chat_template.rerank, with ``{query}`` and ``{document}``: Qwen3's rerankers), else
BOS query EOS SEP document EOS, each special token where the vocabulary asks for it (BERT's and
XLM-RoBERTa's pair encoding).

Unlike llama-server, the query and the document are tokenized apart from the template, with special
tokens not parsed in them: a document cannot write the template's markers."""

from __future__ import annotations

import re
from typing import Any

from appliance.errors import ContextOverflow, InvalidRequest

_PLACEHOLDER = re.compile(r"\{query\}|\{document\}")


def rerank_tokens(model: Any, query: str, document: str) -> list[int]:
    """The prompt ``model`` (appliance.engine.llama.LlamaModel, a reranker) scores for ``document``
    against ``query``. Reads only the vocabulary (any thread)."""

    def text(value: str, *, special: bool) -> list[int]:
        return list(model.tokenize(value, add_special=False, parse_special=special)) if value else []

    template = model.rerank_template
    if template is not None:
        out: list[int] = []
        start = 0
        for match in _PLACEHOLDER.finditer(template):
            out += text(template[start : match.start()], special=True)
            out += text(query if match.group() == "{query}" else document, special=False)
            start = match.end()
        return out + text(template[start:], special=True)
    eos = model.eos_token if model.eos_token >= 0 else model.sep_token
    out = [model.bos_token] if model.add_bos else []
    out += text(query, special=False)
    if model.add_eos:
        out.append(eos)
    if model.add_sep:
        out.append(model.sep_token)
    out += text(document, special=False)
    if model.add_eos:
        out.append(eos)
    return out


def rerank_prompts(model: Any, model_id: str, query: str, documents: list[str]) -> list[list[int]]:
    """One prompt per document (rerank_tokens); InvalidRequest when ``model`` is not a reranker,
    ContextOverflow naming the document whose prompt the model cannot read at once."""
    if not model.reranker:
        raise InvalidRequest(
            f"model {model_id} is not a reranker: its GGUF declares no rank pooling "
            "(a reranker's has pooling_type 4 and a classification head)",
            param="model",
        )
    prompts = [rerank_tokens(model, query, document) for document in documents]
    for index, prompt in enumerate(prompts):
        if len(prompt) > model.rank_limit:
            raise ContextOverflow(
                f"the query and document {index} take {len(prompt)} tokens; this reranker reads at most "
                f"{model.rank_limit} at once",
                param=f"documents.{index}",
            )
    return prompts
