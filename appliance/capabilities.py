"""What a model can do, declared by its file: read from the GGUF header and its chat template, without
loading the weights. `/api/show`, `/v1/models`, `appliance list`, the TUI and the router all take their
answer from ``declared_capabilities``.

What the metadata says and what llama.cpp does with it (src/llama-arch.cpp, src/llama-vocab.cpp):
an encoder architecture (BERT and its kin) or a pooling type makes an embedding model, which llama.cpp
cannot generate text with, and rank pooling (pooling_type 4, a classification head) makes a reranker,
which scores documents against a query and does nothing else; the three FIM token ids make
fill-in-the-middle (Ollama's ``insert``) possible; every other model chats, through its own template
or our ChatML fallback, and takes tools in its family's native format or, without one, the generic JSON
way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.backend import Capabilities
from models.gguf_header import GGUFError, read_gguf_file

# Architectures llama.cpp runs only as encoders: they embed, they cannot generate.
ENCODER_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "neo-bert", "modern-bert",
     "t5encoder", "xlm-roberta"}
)  # fmt: skip
# llama_pooling_type: NONE = 0 (and -1, unspecified) keeps per-token outputs, as a generator does; MEAN,
# CLS, LAST and RANK mark a model converted for sentence embeddings or reranking.
_POOLING = {1: "mean", 2: "cls", 3: "last", 4: "rank"}
# The FIM tokens' keys, and the older names llama.cpp still reads for them.
_FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
)
VISION_UNSUPPORTED = "projector found, not supported"


@dataclass(frozen=True)
class DeclaredCapabilities:
    """What a model's file says it can do."""

    completion: bool
    chat: bool
    template: str | None
    """Where its chat template comes from: ``gguf`` (its own), ``file`` (a configured one), ``chatml``
    (our fallback for a file without one); None for a model that cannot chat."""
    tool_format: str | None
    """How tools reach it: its family's native format (``hermes``, ...), ``generic`` (JSON instructions
    in the system message), or None (no chat, no tools)."""
    thinking: bool
    embedding: bool
    embedding_only: bool
    pooling: str | None  # the pooling type an embedding model was converted with
    insert: bool
    vision: str | None
    """None, or why images are not read although a multimodal projector sits beside the model."""
    architecture: str

    @property
    def tools(self) -> bool:
        return self.tool_format is not None

    @property
    def rerank(self) -> bool:
        """A reranker: rank pooling, served by /v1/rerank only."""
        return self.pooling == "rank"

    def names(self) -> list[str]:
        """Ollama's capability names, in Ollama's order (vision only once we can read images)."""
        named = [("completion", self.completion), ("tools", self.tools), ("insert", self.insert),
                 ("embedding", self.embedding), ("thinking", self.thinking)]  # fmt: skip
        return [name for name, present in named if present]

    def short(self) -> str:
        """One cell for `appliance list`: ``chat tools:hermes think insert``, ``embed only``."""
        if self.rerank:
            return "rerank only"
        if self.embedding_only:
            return "embed only"
        parts = ["chat" if self.chat else "text"]
        if self.tool_format:
            parts.append(f"tools:{self.tool_format}")
        parts += [word for word, present in (("think", self.thinking), ("insert", self.insert)) if present]
        if self.vision:
            parts.append("vision?")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "capabilities": self.names(),
            "chat": self.chat,
            "template": self.template,
            "tool_format": self.tool_format,
            "embedding_only": self.embedding_only,
            "pooling": self.pooling,
            "rerank": self.rerank,
            "vision": self.vision,
        }


def declared_capabilities(path: Path, template_file: Path | None = None) -> DeclaredCapabilities:
    """The capabilities ``path`` declares (``template_file``: a chat template configured for it, used
    instead of the file's own), cached per file as it is now (path, size, mtime). GGUFError when the
    header cannot be read."""
    try:
        stat = path.stat()
        template_stat = template_file.stat().st_mtime_ns if template_file is not None else None
    except OSError as exc:
        raise GGUFError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return _declared(path, stat.st_size, stat.st_mtime_ns, template_file, template_stat)


@functools.lru_cache(maxsize=256)
def _declared(
    path: Path, size_bytes: int, mtime_ns: int, template_file: Path | None, template_mtime_ns: int | None
) -> DeclaredCapabilities:
    metadata = read_gguf_file(path).metadata
    return capabilities_from_metadata(
        metadata,
        template_file.read_text(encoding="utf-8") if template_file is not None else None,
        projector=find_projector(path),
    )


def capabilities_from_metadata(
    metadata: dict[str, Any], template_override: str | None = None, *, projector: Path | None = None
) -> DeclaredCapabilities:
    """The capabilities a GGUF's ``metadata`` declares (a pure function: the cached reader's core)."""
    from appliance.engine.formats import detect  # brings llama.cpp's grammar converter: only when asked

    arch = str(metadata.get("general.architecture", ""))
    pooling_id = metadata.get(f"{arch}.pooling_type")
    pooling = _POOLING.get(pooling_id) if isinstance(pooling_id, int) else None
    embedding_only = arch in ENCODER_ARCHITECTURES or pooling is not None
    insert = not embedding_only and all(
        any(isinstance(metadata.get(key), int) for key in names) for names in _FIM_KEYS
    )
    own = metadata.get("tokenizer.chat_template")
    source = template_override if template_override is not None else own if isinstance(own, str) else None
    if embedding_only:
        template, tool_format, thinking = None, None, False
    else:
        fmt = detect(source)
        template = "file" if template_override is not None else "gguf" if source else "chatml"
        tool_format = fmt.name if fmt.native_tools else "generic"
        thinking = fmt.thinking is not None
    return DeclaredCapabilities(
        completion=not embedding_only,
        chat=not embedding_only,
        template=template,
        tool_format=tool_format,
        thinking=thinking,
        embedding=pooling != "rank",  # llama.cpp pools any other model's hidden states into an embedding
        embedding_only=embedding_only,
        pooling=pooling,
        insert=insert,
        vision=VISION_UNSUPPORTED if projector is not None and not embedding_only else None,
        architecture=arch,
    )


def find_projector(model: Path) -> Path | None:
    """A multimodal projector (``*mmproj*.gguf``, as llama.cpp and the hubs name them) beside ``model``."""
    try:
        found = sorted(p for p in model.parent.glob("*.gguf") if "mmproj" in p.name.lower() and p != model)
    except OSError:
        return None
    return found[0] if found else None


def serving_capabilities(
    path: Path | None, base: Capabilities, template_file: Path | None = None
) -> Capabilities:
    """What the router may count on from the local model in ``path``: ``base`` (what the engine does),
    narrowed by what the file declares (an embedding-only model does not chat; None or an unreadable
    file: ``base``, and loading it will say what is wrong)."""
    if path is None:
        return base
    try:
        declared = declared_capabilities(path, template_file)
    except (GGUFError, OSError):
        return base
    return replace(
        base,
        chat=base.chat and declared.chat,
        completions=base.completions and declared.completion,
        tools=base.tools and declared.tools,
        structured_output=base.structured_output and declared.completion,
        grammar=base.grammar and declared.completion,
        reasoning=declared.thinking,
        infill=base.infill and declared.insert,
        embeddings=base.embeddings and not declared.rerank,
        vision=False,  # a projector beside the model is found, but llama.cpp's mtmd is not wired in here
    )


def described_capabilities(path: Path, data_dir: Path, template_file: Path | None = None) -> dict[str, Any]:
    """The fields a model's description carries (`/v1/models` cards' ``meta``, `/api/show`,
    `appliance list --json`): ``capabilities`` (Ollama's names), ``declared`` (how: template, tool
    format, ...) and ``measured`` (what `appliance eval` found, with its one-line ``summary``; None when
    nothing was measured on this file). GGUFError or OSError when the file cannot be read."""
    from appliance.evaluation.results import load_results, results_summary

    declared = declared_capabilities(path, template_file).to_json()
    measured = load_results(data_dir, path)
    if measured is not None:
        measured = {**measured, "summary": results_summary(measured)}
    return {"capabilities": declared.pop("capabilities"), "declared": declared, "measured": measured}
