"""Pulls: read the candidates' GGUF headers remotely, let the planner choose the quantization that fits
this machine before a byte of weights is downloaded, then download it resumably and verified, and record
it in the store. Hugging Face repos (`owner/name[:QUANT]`) and Ollama library names (`ollama:NAME[:TAG]`).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.config import Settings
from appliance.hardware.profile import HardwareProfile
from appliance.planner.model_info import ModelInfo, model_info
from appliance.planner.plan import Option, Plan
from appliance.planning import choose_plan
from models import hf, ollama
from models.errors import NotFound
from models.gguf_header import GGUFError, merge_split_headers
from models.remote_gguf import read_remote_header
from models.store import Manifest, Store, StoredFile, StoreError, check_ref, name_from_repo, now_iso
from models.transfer import Progress, TransferError, download, resumable_bytes

_DISK_MARGIN = 256 << 20


# Why a pull failed, for the APIs to choose their status by: "not_found" when the hub or registry has no
# such repo, model, tag or file (404), "failed" for anything else (400).
PullErrorKind = Literal["not_found", "failed"]
PullStatus = Literal["resolving", "candidate", "chosen", "warning", "downloading", "success", "error"]


class PullError(Exception):
    """The pull cannot be done; one line saying why, and its ``kind``."""

    def __init__(self, message: str, *, kind: PullErrorKind = "failed") -> None:
        super().__init__(message)
        self.kind: PullErrorKind = kind


@dataclass(frozen=True)
class PullEvent:
    """One step of a pull, for the CLI's progress bar and the API's NDJSON stream (whose wire schema,
    server/response_schemas.py's PullEventOut, is built from these fields)."""

    status: PullStatus
    message: str = ""
    file: str | None = None
    completed: int | None = None
    total: int | None = None
    bytes_per_s: float | None = None
    eta_s: float | None = None
    manifest: dict[str, Any] | None = None
    error: str | None = None  # the last event of a failed pull: why, in one line
    kind: PullErrorKind | None = None  # and what kind of failure it is

    @classmethod
    def failed(cls, error: PullError) -> PullEvent:
        """The last event of a pull that raised ``error``."""
        return cls("error", error=str(error), kind=error.kind)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


Emit = Callable[[PullEvent], None]


@dataclass(frozen=True)
class _Job:
    settings: Settings
    hardware: HardwareProfile
    store: Store
    emit: Emit
    cancel: threading.Event | None


def pull(
    ref: str,
    settings: Settings,
    hardware: HardwareProfile,
    store: Store,
    emit: Emit,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Pull ``ref`` into ``store``; PullError says why not in one line."""
    job = _Job(settings, hardware, store, emit, cancel)
    try:
        if ref.startswith("ollama:"):
            return _pull_ollama(ref, job)
        return _pull_hf(ref, job)
    except (hf.HubError, ollama.OllamaError, TransferError, StoreError, GGUFError) as exc:
        raise PullError(str(exc), kind="not_found" if isinstance(exc, NotFound) else "failed") from None


def hf_candidates(
    repo: str, quant: str | None
) -> tuple[hf.RepoListing, dict[str, tuple[hf.RemoteCandidate, ModelInfo]]]:
    """The repo's GGUF quantizations (only ``quant`` when given), each with its ModelInfo read from
    its remote header (every part's, for a split model), by file name."""
    listing = hf.list_gguf(repo)
    candidates = list(listing.candidates)
    if quant is not None:
        wanted = [c for c in candidates if c.quant.upper() == quant.upper()]
        if not wanted:
            have = ", ".join(sorted({c.quant for c in candidates}))
            raise PullError(f"{repo} has no {quant.upper()} file (has: {have})", kind="not_found")
        candidates = wanted
    auth = hf.auth_headers()
    infos: dict[str, tuple[hf.RemoteCandidate, ModelInfo]] = {}
    for candidate in candidates:
        headers = [read_remote_header(f.url, headers=auth)[0] for f in candidate.files]
        header = merge_split_headers(headers) if len(headers) > 1 else headers[0]
        info = model_info(header, candidate.files[0].name, file_bytes=candidate.size)
        infos[info.path] = (candidate, info)
    return listing, infos


def _pull_hf(ref: str, job: _Job) -> Manifest:
    settings, hardware, store, emit, cancel = job.settings, job.hardware, job.store, job.emit, job.cancel
    repo, quant = hf.parse_repo_ref(ref)
    emit(PullEvent("resolving", f"listing GGUF files of {repo}"))
    listing, infos = hf_candidates(repo, quant)
    auth = hf.auth_headers()
    plan = choose_plan([info for _, info in infos.values()], hardware, settings)
    chosen, _ = infos[plan.model.path]
    for option in plan.alternatives:
        emit(PullEvent("candidate", _plan_line_option(option)))
    _check_fit(plan, explicit=quant is not None, what=f"{repo}:{chosen.quant}", emit=emit)
    emit(PullEvent("chosen", f"{chosen.quant} ({_size(chosen.size)}): " + "; ".join(plan.reasons)))
    name, tag = name_from_repo(repo), chosen.quant.lower()
    check_ref(name, tag)
    existing = store.get(f"{name}:{tag}")
    if existing is not None and existing.source.get("revision") == listing.revision:
        emit(PullEvent("success", f"{name}:{tag} is already up to date", manifest=existing.to_json()))
        return existing
    directory = store.model_dir(name)
    _check_disk(store, [(directory / f.name, f.size - resumable_bytes(f.url, store.partial_dir, f.sha256))
                        for f in chosen.files])  # fmt: skip
    stored = []
    for f in chosen.files:
        dest = download(
            f.url, directory / f.name, partial_dir=store.partial_dir, sha256=f.sha256, size=f.size,
            headers=auth, on_progress=_progress(emit), cancel=cancel,
        )  # fmt: skip
        stored.append(StoredFile(f"{name}/{f.name}", dest.stat().st_size, f.sha256))
    manifest = Manifest(
        name=name,
        tag=tag,
        quant=chosen.quant,
        files=tuple(stored),
        source={"kind": "huggingface", "repo": repo, "revision": listing.revision,
                "files": [f.name for f in chosen.files]},
        added_at=now_iso(),
    )  # fmt: skip
    store.add(manifest)
    emit(PullEvent("success", f"pulled {manifest.ref}", manifest=manifest.to_json()))
    return manifest


def ollama_candidate(
    ref: str, registry: str = ollama.DEFAULT_REGISTRY
) -> tuple[ollama.OllamaRef, ollama.OllamaModel, ModelInfo]:
    """An Ollama model's manifest and its ModelInfo, read from the GGUF layer's remote header."""
    target = ollama.parse_ref(ref, registry)
    model = ollama.fetch_model(target)
    header, _ = read_remote_header(target.blob_url(model.model.digest))
    return target, model, model_info(header, f"{target.name}:{target.tag}", file_bytes=model.model.size)


def _pull_ollama(ref: str, job: _Job) -> Manifest:
    settings, hardware, store, emit, cancel = job.settings, job.hardware, job.store, job.emit, job.cancel
    target = ollama.parse_ref(ref, settings.store.ollama_registry)
    emit(PullEvent("resolving", f"fetching the manifest of {target.name}:{target.tag}"))
    target, model, info = ollama_candidate(ref, settings.store.ollama_registry)
    url = target.blob_url(model.model.digest)
    plan = choose_plan([info], hardware, settings)
    name = target.name if target.namespace == "library" else f"{target.namespace}/{target.name}"
    name, tag = name.lower(), target.tag.lower()
    _check_fit(plan, explicit=True, what=f"{name}:{tag}", emit=emit)
    emit(
        PullEvent(
            "chosen",
            f"{name}:{tag} ({plan.model.quant}, {_size(model.model.size)}): " + "; ".join(plan.reasons),
        )
    )
    check_ref(name, tag)
    digest = model.model.digest.removeprefix("sha256:")
    dest = store.model_dir(name) / f"sha256-{digest}.gguf"
    _check_disk(store, [(dest, model.model.size - resumable_bytes(url, store.partial_dir, digest))])
    download(url, dest, partial_dir=store.partial_dir, sha256=digest, size=model.model.size,
             on_progress=_progress(emit), cancel=cancel)  # fmt: skip
    manifest = Manifest(
        name=name,
        tag=tag,
        quant=plan.model.quant,
        files=(StoredFile(f"{name}/{dest.name}", model.model.size, digest),),
        source={"kind": "ollama", "registry": target.registry,
                "name": f"{target.namespace}/{target.name}:{target.tag}",
                "manifest_digest": model.manifest_digest},
        added_at=now_iso(),
        extra={"ollama_template": model.template, "ollama_params": model.params,
               "ollama_system": model.system},
    )  # fmt: skip
    store.add(manifest)
    emit(PullEvent("success", f"pulled {manifest.ref}", manifest=manifest.to_json()))
    return manifest


def _plan_line_option(option: Option) -> str:
    m, fits = option.memory, "fits" if option.fits else "does not fit"
    return (
        f"{option.model.quant}: {fits} at context {option.settings.n_ctx} "
        f"({m.ram_bytes / (1 << 30):.2f} GiB RAM, {m.vram_bytes / (1 << 30):.2f} GiB VRAM)"
    )


def _check_fit(plan: Plan, *, explicit: bool, what: str, emit: Emit) -> None:
    if plan.fits:
        return
    if not explicit:
        raise PullError(f"no quantization of {what.partition(':')[0]} fits this machine: {plan.reasons[0]}")
    emit(PullEvent("warning", f"{what} will not fit this machine ({plan.reasons[0]}); pulling it as asked"))


def _check_disk(store: Store, files: list[tuple[Path, int]]) -> None:
    """Refuse a pull the disk cannot hold: ``files`` are each destination with the bytes it still needs
    (a resumed pull needs only the rest), and a margin stays free."""
    needed = sum(size for dest, size in files if not dest.is_file())
    if not needed:
        return
    store.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.root).free
    if free < needed + _DISK_MARGIN:
        raise PullError(f"not enough disk space in {store.root}: {_size(needed)} needed, {_size(free)} free")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def _progress(emit: Emit) -> Callable[[Progress], None]:
    def on_progress(p: Progress) -> None:
        eta = None if p.eta_s is None else round(p.eta_s, 1)
        emit(PullEvent("downloading", file=p.file, completed=p.completed, total=p.total,
                       bytes_per_s=round(p.bytes_per_s), eta_s=eta))  # fmt: skip

    return on_progress
