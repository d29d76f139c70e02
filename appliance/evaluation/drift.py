"""Quantization drift: how far a model's next-token distributions are from a reference's on one text.

The measure llama.cpp's `llama-perplexity --kl-divergence` reports, computed the same way: the text is cut
into whole chunks of ``chunk`` tokens, each read from an empty cache and starting with BOS where the model
wants one, and only the second half of each chunk is scored, so that every scored token has at least half
a chunk of context. The reference is read first and its log-probabilities kept in a scratch file (a
vocabulary of 256k tokens is 1 MiB a position), then the model is read and compared position by position.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class DriftError(Exception):
    """Drift cannot be measured (a text too short, different vocabularies): one readable line."""


class Scorer(Protocol):
    """What drift needs of a loaded model (appliance.engine.llama.LlamaModel)."""

    n_vocab: int

    @property
    def add_bos(self) -> bool: ...

    @property
    def bos_token(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def score(self, tokens: list[int], first: int, step: int = 64) -> Iterator[np.ndarray[Any, Any]]: ...


@dataclass(frozen=True)
class Drift:
    tokens: int  # positions scored
    chunks: int
    chunk: int
    kld_mean: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1_agreement: float  # how often both models rank the same token first
    ppl: float  # the model's perplexity on the scored tokens
    ppl_against: float  # the reference's

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def chunks_of(tokens: list[int], chunk: int, bos: int | None) -> list[list[int]]:
    """The text's whole chunks, each starting with ``bos`` (when the model adds one) as llama-perplexity
    reads them."""
    if chunk < 16:
        raise DriftError(f"a chunk of {chunk} tokens is too short; use at least 16")
    count = len(tokens) // chunk
    if count == 0:
        raise DriftError(f"the text is {len(tokens)} tokens long; drift needs at least one chunk of {chunk}")
    out = []
    for i in range(count):
        part = tokens[i * chunk : (i + 1) * chunk]
        if bos is not None:
            part[0] = bos
        out.append(part)
    return out


def _rows_at_once(n_vocab: int) -> int:
    """Positions scored per step: about 4M log-probabilities (32 MiB as float64 while compared), so a
    256k vocabulary takes 16 rows at a time and SmolLM2's 49k the usual 64."""
    return max(1, min(64, (4 << 20) // n_vocab))


def _tokens(model: Scorer, text: str) -> list[int]:
    return model.tokenize(text, add_special=True, parse_special=False)


def measure(
    open_model: Callable[[Path], AbstractContextManager[Scorer]],
    model_path: Path,
    reference_path: Path,
    text: str,
    *,
    chunk: int = 512,
    scratch_dir: Path | None = None,
) -> Drift:
    """KL divergence of ``model_path``'s next-token distributions from ``reference_path``'s, top-1
    agreement and both perplexities on ``text``. The two models are loaded one after the other
    (``open_model`` plans and loads one, and frees it on exit), never both at once."""
    first = chunk // 2
    with tempfile.TemporaryDirectory(prefix="drift-", dir=scratch_dir) as scratch:
        with open_model(reference_path) as reference:
            tokens = _tokens(reference, text)
            chunks = chunks_of(tokens, chunk, reference.bos_token if reference.add_bos else None)
            rows_per_chunk = chunk - 1 - first
            n_vocab = reference.n_vocab
            kept = np.lib.format.open_memmap(
                Path(scratch) / "reference.npy",
                mode="w+",
                dtype=np.float32,
                shape=(len(chunks) * rows_per_chunk, n_vocab),
            )
            ref_nll = np.empty(len(kept), dtype=np.float64)
            at = 0
            for part in chunks:
                for rows in reference.score(part, first, _rows_at_once(n_vocab)):
                    targets = part[first + 1 + (at % rows_per_chunk) :][: len(rows)]
                    kept[at : at + len(rows)] = rows
                    ref_nll[at : at + len(rows)] = -rows[np.arange(len(rows)), targets]
                    at += len(rows)
            kept.flush()
        with open_model(model_path) as model:
            if model.n_vocab != n_vocab or _tokens(model, text) != tokens:
                raise DriftError(
                    f"{model_path.name} and {reference_path.name} tokenize differently: drift compares two "
                    "quantizations of one model"
                )
            kld = np.empty(len(kept), dtype=np.float64)
            nll = np.empty(len(kept), dtype=np.float64)
            agree = np.empty(len(kept), dtype=bool)
            at = 0
            for part in chunks:
                for rows in model.score(part, first, _rows_at_once(n_vocab)):
                    n = len(rows)
                    targets = part[first + 1 + (at % rows_per_chunk) :][:n]
                    ref = np.asarray(kept[at : at + n], dtype=np.float64)
                    kld[at : at + n] = (np.exp(ref) * (ref - rows)).sum(axis=1)
                    nll[at : at + n] = -rows[np.arange(n), targets]
                    agree[at : at + n] = ref.argmax(axis=1) == rows.argmax(axis=1)
                    at += n
        del kept
    kld = np.maximum(kld, 0.0)  # float rounding can leave a hair below zero where both agree exactly
    return Drift(
        tokens=len(kld),
        chunks=len(chunks),
        chunk=chunk,
        kld_mean=float(kld.mean()),
        kld_median=float(np.median(kld)),
        kld_p99=float(np.percentile(kld, 99)),
        kld_max=float(kld.max()),
        top1_agreement=float(agree.mean()),
        ppl=float(np.exp(nll.mean())),
        ppl_against=float(np.exp(ref_nll.mean())),
    )
