"""The model store: pulled and imported models, each with a small manifest saying exactly which weights
answer to its name.

Layout under the store directory (``DATA_DIR/models``)::

    manifests/<name>/<tag>.json   one per model: source (repo and revision, registry, or file), files with
                                  sha256 and size, quantization, when it was added
    files/<name>/<file>.gguf      pulled files, under their original names (split parts side by side, as
                                  llama.cpp expects them)
    .partial/                     downloads in progress, resumed from there
    *.gguf, <dir>/*.gguf          loose files a user dropped in: servable too, without a manifest

A manifest is written (atomically) only after every file it names is complete and verified, so a model
that shows up in the store is never half downloaded. Imported models point at files outside the store,
which ``remove`` never deletes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.gguf_file import check_gguf
from models.gguf_header import GGUFError, read_gguf_file
from models.naming import model_id_from_path, quant_from_path

MANIFEST_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-]*(/[a-z0-9][a-z0-9._\-]*)?$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._\-]*$")
RESERVED_DIRS = frozenset({"manifests", "files", ".partial"})

# llama.cpp's general.file_type values (llama_ftype) as quantization names, for files whose names do not say.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


class StoreError(Exception):
    """A store operation cannot be done; the message says why in one line."""


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's files/ directory, or absolute for an imported file
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    name: str
    tag: str
    quant: str
    files: tuple[StoredFile, ...]
    source: dict[str, Any]  # {"kind": "huggingface" | "ollama" | "file", ...}: where the weights came from
    added_at: str
    chat_template_source: str = "gguf"
    imported: bool = False  # the files live outside the store: remove() leaves them alone
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str | None:
        return self.files[0].sha256 if len(self.files) == 1 else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = MANIFEST_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        files = tuple(StoredFile(**f) for f in data["files"])
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "files"}
        return cls(files=files, **known)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def check_ref(name: str, tag: str) -> None:
    if not _NAME.match(name):
        raise StoreError(f"not a valid model name: {name!r} (lowercase letters, digits, '.', '_', '-')")
    if not _TAG.match(tag):
        raise StoreError(f"not a valid tag: {tag!r} (lowercase letters, digits, '.', '_', '-')")


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name:tag`` -> (name, tag); ``name`` -> (name, None)."""
    name, _, tag = ref.partition(":")
    return name, tag or None


def name_from_repo(repo: str) -> str:
    """A store name for a hub repo: its name, lowercase, without a trailing "-GGUF"."""
    base = repo.rsplit("/", 1)[-1].lower()
    return re.sub(r"[-_.]gguf$", "", base) or base


def quant_of(path: Path) -> str:
    """A GGUF file's quantization: from its name, else from its header's general.file_type."""
    named = quant_from_path(path)
    if named:
        return named.upper()
    try:
        file_type = read_gguf_file(path).metadata.get("general.file_type")
    except (GGUFError, OSError):
        file_type = None
    return FILE_TYPES.get(file_type, "unknown") if isinstance(file_type, int) else "unknown"


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests_dir = root / "manifests"
        self.files_dir = root / "files"
        self.partial_dir = root / ".partial"

    # -- reading --------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every stored model, sorted by name and tag; unreadable manifests are skipped."""
        found = []
        for path in sorted(self.manifests_dir.glob("**/*.json")):
            try:
                found.append(Manifest.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError):
                continue
        return found

    def get(self, ref: str) -> Manifest | None:
        name, tag = split_ref(ref)
        if tag is None or not _NAME.match(name) or not _TAG.match(tag):
            return None  # not a name the store can hold (and no path out of it)
        path = self._manifest_path(name, tag)
        if not path.is_file():
            return None
        try:
            return Manifest.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def file_path(self, stored: StoredFile) -> Path:
        path = Path(stored.path)
        return path if path.is_absolute() else self.files_dir / path

    def model_path(self, manifest: Manifest) -> Path:
        """The file llama.cpp loads (the first part of a split model)."""
        return self.file_path(manifest.files[0])

    def model_dir(self, name: str) -> Path:
        return self.files_dir / name

    # -- writing --------------------------------------------------------------------------------

    def add(self, manifest: Manifest) -> None:
        """Record ``manifest``; its files must already be in place."""
        check_ref(manifest.name, manifest.tag)
        for stored in manifest.files:
            if not self.file_path(stored).is_file():
                raise StoreError(f"cannot record {manifest.ref}: {self.file_path(stored)} is missing")
        path = self._manifest_path(manifest.name, manifest.tag)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
                try:
                    json.dump(manifest.to_json(), f, indent=2)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    os.unlink(f.name)
                    raise
            os.replace(f.name, path)
        except OSError as exc:  # a full disk, most likely: its files stay, a next pull finds them done
            raise StoreError(
                f"cannot record {manifest.ref} in {self.manifests_dir}: {exc.strerror}"
            ) from None

    def remove(self, ref: str) -> Manifest:
        """Delete a stored model: its manifest, and its files unless imported or used by another tag."""
        manifest = self.get(ref)
        if manifest is None:
            raise StoreError(f"no stored model {ref!r} (see `appliance list`)")
        self._manifest_path(manifest.name, manifest.tag).unlink()
        if not manifest.imported:
            still_used = {self.file_path(f) for m in self.manifests() for f in m.files}
            for stored in manifest.files:
                path = self.file_path(stored)
                # Only files the store holds: a manifest edited to name another path deletes nothing.
                if path not in still_used and path.resolve().is_relative_to(self.files_dir.resolve()):
                    path.unlink(missing_ok=True)
            for directory in (self.model_dir(manifest.name), self.manifests_dir / manifest.name):
                if directory.is_dir() and not any(directory.iterdir()):
                    directory.rmdir()
        return manifest

    def import_file(self, path: Path, *, name: str | None = None, tag: str | None = None) -> Manifest:
        """Register an existing GGUF without copying it (its sha256 is computed once, here)."""
        path = path.expanduser().resolve()
        problem = check_gguf(path)
        if problem:
            raise StoreError(problem)
        quant = quant_of(path)
        name = (name or model_id_from_path(path)).lower()
        tag = (tag or quant).lower()
        check_ref(name, tag)
        if self.get(f"{name}:{tag}") is not None:
            raise StoreError(f"{name}:{tag} is already in the store (remove it first, or pass --name)")
        stored = StoredFile(str(path), path.stat().st_size, sha256_file(path))
        manifest = Manifest(
            name=name,
            tag=tag,
            quant=quant,
            files=(stored,),
            source={"kind": "file", "path": str(path)},
            added_at=now_iso(),
            imported=True,
        )
        self.add(manifest)
        return manifest

    def _manifest_path(self, name: str, tag: str) -> Path:
        return self.manifests_dir / name / f"{tag}.json"
