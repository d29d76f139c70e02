"""Rerank (POST /v1/rerank, and /rerank, /v1/reranking, /reranking as llama-server names it): Jina's and
Cohere's shape. A reranker model (rank pooling: its GGUF says pooling_type 4) scores each document
against the query; the results come best first, ``top_n`` of them. A model that is not a reranker: 400."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from server.llama_server_routes import manager_of, served
from server.llama_server_schemas import RerankRequest
from server.openai_routes import _shown, _wait_for_load
from server.openapi import GENERATION, doc
from server.schemas import read_body

router = APIRouter()


def ranked(scores: list[float], top_n: int | None) -> list[int]:
    """The documents' indices, highest score first (ties in the documents' order), ``top_n`` of them."""
    order = sorted(range(len(scores)), key=lambda index: -scores[index])
    return order[:top_n] if top_n is not None else order


async def _rerank(request: Request) -> dict[str, Any]:
    body = await read_body(request, RerankRequest)
    async with manager_of(request).use(body.model, wait=_wait_for_load(request)) as backend:
        model = served(request, backend.model_id)
        scores, tokens = await backend.rerank(body.query, body.texts())
    results = []
    for index in ranked(scores, body.top_n):
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if body.return_documents:
            result["document"] = body.result_document(index)
        results.append(result)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "object": "list",
        "model": _shown(request, body.model, model),
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


for _path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking"):
    # llama-server's older names are served too, but left out of the published document: one entry per
    # shape is enough for clients, and the schema fuzzing does not try the same route four times.
    router.add_api_route(
        _path,
        _rerank,
        methods=["POST"],
        include_in_schema=_path in ("/v1/rerank", "/rerank"),
        **doc("openai", body=RerankRequest, errors=GENERATION),
    )
