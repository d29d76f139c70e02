"""Hugging Face repos as lists of GGUF candidates, through huggingface_hub (so HF_ENDPOINT, HF_TOKEN and
its token file work): one candidate per quantization, split files grouped, each file with its size and
the LFS sha256 the Hub reports, at a pinned commit."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

# huggingface_hub is imported where it is used, not here: its hf_api cost every daemon start 0.13 s of
# CPU on top of the daemon's 1.41 s of imports, and the daemon imports this module (for its pull routes)
# without ever talking to the Hub until a pull.
from models.errors import NotFound
from models.naming import quant_from_path

_REF = re.compile(r"^(?P<repo>[\w.\-]+/[\w.\-]+)(?::(?P<quant>[\w.\-]+))?$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class HubError(Exception):
    """The Hub cannot give us the repo or file; one line why."""


class HubNotFound(HubError, NotFound):
    """The Hub has no such repo or revision (or a private one, without the token that reaches it)."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path in the repo
    size: int
    sha256: str | None
    url: str  # resolve URL at the pinned commit


@dataclass(frozen=True)
class RemoteCandidate:
    quant: str  # upper case, as file names write it: "Q4_K_M"
    files: tuple[RemoteFile, ...]  # one, or a split model's parts in order

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class RepoListing:
    repo: str
    revision: str  # the commit every URL is pinned to
    candidates: tuple[RemoteCandidate, ...]


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """``owner/name[:QUANT]`` -> (repo, quant or None); a repo id the Hub itself would accept, so it
    cannot name another path of the Hub's API (``../..``)."""
    match = _REF.match(ref.strip())
    if match is None:
        raise HubError(f"not a Hugging Face repo: {ref!r} (expected owner/name or owner/name:QUANT)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(match.group("repo"))
    except HFValidationError:
        raise HubError(f"not a Hugging Face repo id: {match.group('repo')!r}") from None
    return match.group("repo"), match.group("quant")


def _safe_file_name(repo: str, name: str) -> str:
    """``name`` when it is a plain relative path (a file, or one in the repo's folders): a listing that
    names ``../x.gguf`` or ``/etc/x.gguf`` would have the pull write outside the store."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or any(p in ("..", ".", "") for p in parts):
        raise HubError(f"refusing {repo}: the Hub lists a file named {name!r}, which is not a safe path")
    return name


def auth_headers(token: str | None = None) -> dict[str, str]:
    """What huggingface_hub itself would send (HF_TOKEN, the saved token), for our own transfers."""
    from huggingface_hub.utils import build_hf_headers, get_token

    return build_hf_headers(token=token or get_token())


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def list_gguf(
    repo: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None
) -> RepoListing:
    """The repo's GGUF files by quantization (mmproj projector files left out)."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    base = _endpoint(endpoint)
    try:
        info = HfApi(endpoint=base).model_info(repo, revision=revision, files_metadata=True, token=token)
    except GatedRepoError:
        raise HubError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubNotFound(f"repo {repo} not found on {base} (private repos need HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubNotFound(f"{repo} has no revision {revision}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        kind = HubNotFound if status == 404 else HubError
        raise kind(f"{base} answered {status} for {repo}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise HubError(f"cannot reach {base}: {type(exc).__name__} {exc}".strip()) from None
    commit = info.sha or revision or "main"
    groups: dict[str, list[RemoteFile]] = defaultdict(list)
    quants: dict[str, str] = {}
    for sibling in info.siblings or []:
        name = _safe_file_name(repo, sibling.rfilename)
        if not name.endswith(".gguf") or "mmproj" in PurePosixPath(name).name.lower():
            continue
        sha = sibling.lfs.sha256 if sibling.lfs is not None else None
        size = sibling.size if sibling.size is not None else (sibling.lfs.size if sibling.lfs else 0)
        url = hf_hub_url(repo, name, revision=commit, endpoint=base)
        key = _SPLIT.sub("", name)  # the parts of one split model share this
        groups[key].append(RemoteFile(name, size, sha, url))
        quants[key] = (quant_from_path(Path(_SPLIT.sub(".gguf", name))) or "unknown").upper()
    if not groups:
        raise HubError(f"{repo} has no GGUF files")
    candidates = tuple(
        RemoteCandidate(quants[key], tuple(sorted(files, key=lambda f: f.name)))
        for key, files in sorted(groups.items())
    )
    return RepoListing(repo, commit, candidates)
