"""The models this machine can serve without downloading anything: GGUF files in the store directory,
the embedded default model, and the file `serve` was given."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from models.embedded import MODEL_ID as EMBEDDED_ID
from models.embedded import embedded_model_path
from models.gguf_file import check_gguf
from models.naming import model_id_from_path, quant_from_path

# Of a split model ("-00002-of-00003"), only the first part is loaded: llama.cpp finds the others.
_LATER_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")


@dataclass(frozen=True)
class LocalModel:
    id: str
    path: Path
    source: str  # "argument" (given to serve), "store" or "embedded"


def store_models(directory: Path) -> list[LocalModel]:
    """GGUF files directly in ``directory`` or one folder down, named from their file names. Files
    whose names give the same id are told apart by quantization: ``name:q4_k_m``."""
    if not directory.is_dir():
        return []
    paths = sorted(
        p
        for p in [*directory.glob("*.gguf"), *directory.glob("*/*.gguf")]
        if not _is_later_split(p) and check_gguf(p) is None
    )
    by_id: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_id[model_id_from_path(path)].append(path)
    found = []
    for model_id, same in by_id.items():
        for path in same:
            name = model_id if len(same) == 1 else f"{model_id}:{quant_from_path(path) or path.stem.lower()}"
            found.append(LocalModel(name, path, "store"))
    return found


def _is_later_split(path: Path) -> bool:
    match = _LATER_SPLIT.search(path.name)
    return match is not None and match.group(1) != "00001"


def local_models(store_dir: Path, served: LocalModel | None = None) -> list[LocalModel]:
    """Everything servable here, ``served`` first, each file once and each id once."""
    candidates = [served] if served is not None else []
    candidates += store_models(store_dir)
    embedded = embedded_model_path()
    if embedded is not None:
        candidates.append(LocalModel(EMBEDDED_ID, embedded, "embedded"))
    seen_paths: set[Path] = set()
    seen_ids: set[str] = set()
    out = []
    for model in candidates:
        key = model.path.resolve()
        if key in seen_paths or model.id in seen_ids:
            continue
        seen_paths.add(key)
        seen_ids.add(model.id)
        out.append(model)
    return out
