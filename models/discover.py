"""GGUF models other tools already downloaded, listed and served where they lie (never copied, never
deleted): the Hugging Face cache (through huggingface_hub's own scanner), Ollama's store (manifests
pointing at sha256-named blobs) and LM Studio's models folder (``publisher/repo/file.gguf``). A location
that is missing or unreadable is simply not there."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.gguf_file import check_gguf
from models.naming import model_id_from_path, quant_from_path
from models.store import name_from_repo

_LATER_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")
_MODEL_LAYER = "application/vnd.ollama.image.model"


@dataclass(frozen=True)
class ExternalModel:
    name: str  # name:tag
    path: Path
    source: str  # huggingface-cache | ollama | lm-studio
    origin: str
    quant: str | None
    size_bytes: int
    sha256: str | None


def _usable(path: Path) -> bool:
    name = path.name.lower()
    match = _LATER_SPLIT.search(name)
    if "mmproj" in name or (match is not None and match.group(1) != "00001"):
        return False
    return check_gguf(path) is None


def default_hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def default_ollama_dirs() -> list[Path]:
    if os.environ.get("OLLAMA_MODELS"):
        return [Path(os.environ["OLLAMA_MODELS"])]
    return [Path.home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def default_lmstudio_dirs() -> list[Path]:
    return [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]


def hf_cache_models(cache: Path) -> list[ExternalModel]:
    """GGUFs in the Hugging Face cache: the revision ``main`` points at (else the newest), one per file."""
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = next((r for r in repo.revisions if "main" in r.refs), None)
        revision = revision or max(repo.revisions, key=lambda r: r.last_modified)
        files = [f for f in revision.files if f.file_name.endswith(".gguf") and _usable(f.file_path)]
        base = name_from_repo(repo.repo_id)
        for file in files:
            quant = quant_from_path(file.file_path)
            tag = quant or model_id_from_path(file.file_path)
            blob = file.blob_path.name
            origin = f"{repo.repo_id}@{revision.commit_hash}"
            found.append(ExternalModel(
                f"{base}:{tag}", file.file_path, "huggingface-cache", origin,
                quant.upper() if quant else None, file.size_on_disk, blob if len(blob) == 64 else None,
            ))  # fmt: skip
    return found


def ollama_models(root: Path) -> list[ExternalModel]:
    """Ollama's store: ``manifests/<registry>/<namespace>/<name>/<tag>`` naming ``blobs/sha256-<hex>``."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return []
    found = []
    for manifest_path in sorted(p for p in manifests.glob("*/*/*/*") if p.is_file()):
        registry, namespace, name = manifest_path.parts[-4:-1]
        tag = manifest_path.name
        try:
            manifest = json.loads(manifest_path.read_text())
            layer = next(x for x in manifest.get("layers", []) if x.get("mediaType") == _MODEL_LAYER)
        except (OSError, ValueError, StopIteration, AttributeError):
            continue
        digest = str(layer.get("digest", "")).removeprefix("sha256:")
        blob = root / "blobs" / f"sha256-{digest}"
        if not blob.is_file() or check_gguf(blob) is not None:
            continue
        full = name if namespace == "library" else f"{namespace}/{name}"
        found.append(ExternalModel(
            f"{full}:{tag}".lower(), blob, "ollama", f"{registry}/{namespace}/{name}:{tag}", None,
            blob.stat().st_size, digest,
        ))  # fmt: skip
    return found


def lmstudio_models(root: Path) -> list[ExternalModel]:
    """LM Studio's folder: ``<publisher>/<repo>/<file>.gguf``."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("*/*/*.gguf")):
        if not _usable(path):
            continue
        publisher, repo = path.parts[-3:-1]
        quant = quant_from_path(path)
        tag = quant or model_id_from_path(path)
        found.append(ExternalModel(
            f"{name_from_repo(repo)}:{tag}", path, "lm-studio", f"{publisher}/{repo}",
            quant.upper() if quant else None, path.stat().st_size, None,
        ))  # fmt: skip
    return found


def discover(
    *,
    hf_cache: Path | None = None,
    ollama_dirs: Sequence[Path] | None = None,
    lmstudio_dirs: Sequence[Path] | None = None,
) -> list[ExternalModel]:
    """Every GGUF the other tools hold here, each file once."""
    found = hf_cache_models(hf_cache or default_hf_cache())
    for root in ollama_dirs if ollama_dirs is not None else default_ollama_dirs():
        found += ollama_models(root)
    for root in lmstudio_dirs if lmstudio_dirs is not None else default_lmstudio_dirs():
        found += lmstudio_models(root)
    seen: set[Path] = set()
    unique = []
    for model in found:
        key = model.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(model)
    return unique
