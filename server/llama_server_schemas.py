"""Wire schemas of llama-server's own endpoints (requests): /infill, /tokenize, /detokenize and
/v1/rerank. Strict types and unknown fields accepted and logged, as server/schemas.py's."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from server.schemas import _Open, _Sampling


class InputFile(_Open):
    """Another file of the repository, for context (llama-server's ``input_extra`` chunk)."""

    filename: str = "tmp"
    text: str


class InfillRequest(_Sampling):
    """llama-server's /infill: the middle between ``input_prefix`` and ``input_suffix``."""

    input_prefix: str
    input_suffix: str
    input_extra: list[InputFile] = Field(default_factory=list)
    prompt: str = Field("", description="text the middle starts with (it ends the prefix)")
    n_predict: int | None = Field(None, ge=-1, description="llama-server's max_tokens (-1: no bound)")

    def reply_tokens(self) -> int | None:
        """The reply's bound: ``n_predict`` (-1: none), else ``max_tokens``."""
        if self.n_predict is not None:
            return None if self.n_predict < 0 else self.n_predict
        return self.max_tokens


class TokenizeRequest(_Open):
    content: str | list[str | int]
    model: str | None = None
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Open):
    tokens: list[int] = Field(default_factory=list)
    model: str | None = None


class RerankDocument(_Open):
    text: str


class RerankRequest(_Open):
    """Jina's and Cohere's rerank request (llama-server's /v1/rerank)."""

    query: str
    documents: list[str | RerankDocument] = Field(min_length=1)
    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]

    def result_document(self, index: int) -> dict[str, Any]:
        """A result's ``document``, as Jina and Cohere write it."""
        return {"text": self.texts()[index]}
