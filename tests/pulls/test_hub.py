"""Hub listings, remote headers and transfers against the fake Hub (real HTTP, huggingface_hub itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import ollama
from models.errors import NotFound
from models.gguf_header import read_gguf_file
from models.hf import HubError, list_gguf, parse_repo_ref
from models.remote_gguf import read_remote_header
from models.transfer import ChecksumMismatch, DiskFull, RemoteError, download
from tests.pulls.conftest import TINY_QUANTS, TOKEN, Files
from tests.pulls.fakehub import COMMIT, FakeHub


def test_a_repo_lists_one_candidate_per_quantization_pinned_to_its_commit(hub: FakeHub, files: Files) -> None:
    listing = list_gguf("acme/Tiny-GGUF", endpoint=hub.url)
    assert listing.revision == COMMIT
    assert sorted(c.quant for c in listing.candidates) == sorted(TINY_QUANTS)  # mmproj and README left out
    q8 = next(c for c in listing.candidates if c.quant == "Q8_0")
    assert q8.files[0].sha256 == hub.sha(files.tiny["Q8_0"]) and q8.size == files.tiny["Q8_0"].stat().st_size
    assert f"/resolve/{COMMIT}/" in q8.files[0].url
    split = list_gguf("acme/Split-GGUF", endpoint=hub.url)
    assert len(split.candidates) == 1 and [f.name for f in split.candidates[0].files] == [
        p.name for p in files.split
    ]
    assert split.candidates[0].quant == "F16"


def test_hub_errors_are_one_line(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="repo acme/Nope not found"):
        list_gguf("acme/Nope", endpoint=hub.url)
    with pytest.raises(HubError, match="has no GGUF files"):
        list_gguf("acme/Docs-Only", endpoint=hub.url)
    with pytest.raises(HubError, match="private repos need HF_TOKEN"):
        list_gguf("acme/Private-GGUF", endpoint=hub.url)
    assert list_gguf("acme/Private-GGUF", endpoint=hub.url, token=TOKEN).candidates
    with pytest.raises(HubError, match="not a Hugging Face repo"):
        parse_repo_ref("just-a-name")
    assert parse_repo_ref("acme/Tiny-GGUF:q4_k_m") == ("acme/Tiny-GGUF", "q4_k_m")


def test_a_missing_repo_model_or_file_is_a_not_found_and_a_failing_server_is_not(
    hub: FakeHub, tmp_path: Path
) -> None:
    """The type the pull APIs choose their 404 by: a repo, an Ollama tag, a listed file the Hub answers
    404 for (EntryNotFound); not a repo without GGUF files, nor a file the Hub answers 503 for."""
    with pytest.raises(NotFound):
        list_gguf("acme/Nope", endpoint=hub.url)
    with pytest.raises(NotFound):
        ollama.fetch_model(ollama.parse_ref("ollama:smollm2:9z", hub.url))
    with pytest.raises(HubError) as no_gguf:
        list_gguf("acme/Docs-Only", endpoint=hub.url)
    assert not isinstance(no_gguf.value, NotFound)
    file = list_gguf("acme/Tiny-GGUF", endpoint=hub.url).candidates[0].files[0]
    hub.knobs.file_status[file.name] = 404
    with pytest.raises(NotFound):
        read_remote_header(file.url)
    with pytest.raises(NotFound):
        download(file.url, tmp_path / file.name, partial_dir=tmp_path / "partial")
    hub.knobs.file_status[file.name] = 503
    with pytest.raises(RemoteError) as failing:
        read_remote_header(file.url)
    assert failing.value.status == 503 and not isinstance(failing.value, NotFound)
    with pytest.raises(RemoteError) as failing:
        download(file.url, tmp_path / file.name, partial_dir=tmp_path / "partial")
    assert failing.value.status == 503 and not isinstance(failing.value, NotFound)


def test_a_remote_header_costs_a_small_prefix_and_equals_the_local_one(hub: FakeHub, files: Files) -> None:
    listing = list_gguf("acme/SmolLM2-135M-Instruct-GGUF", endpoint=hub.url)
    remote, fetched = read_remote_header(listing.candidates[0].files[0].url)
    local = read_gguf_file(files.smollm2)
    assert remote.tensors == local.tensors and remote.metadata.keys() == local.metadata.keys()
    size = files.smollm2.stat().st_size
    assert fetched < 0.05 * size  # about 2 MB of a 98 MB file: the tokenizer is most of it
    assert hub.knobs.served[files.smollm2.name] == fetched


def test_download_resumes_after_a_drop_and_verifies(hub: FakeHub, files: Files, tmp_path: Path) -> None:
    candidate = list_gguf("acme/SmolLM2-135M-Instruct-GGUF", endpoint=hub.url).candidates[0].files[0]
    dest, partial = tmp_path / "store" / candidate.name, tmp_path / "partial"
    hub.knobs.cut_after = 30 << 20
    with pytest.raises(RemoteError, match="run again to resume"):
        download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    assert not dest.exists() and (partial / f"{candidate.sha256}.part").stat().st_size >= 30 << 20
    download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    assert dest.stat().st_size == candidate.size and not any(partial.iterdir())
    resumed = [r for name, r in hub.knobs.ranges if name == files.smollm2.name and r]
    assert resumed and resumed[-1].startswith("bytes=") and resumed[-1] != "bytes=0-"
    assert hub.knobs.served[files.smollm2.name] < candidate.size * 1.05  # the rest, not everything again
    before = len(hub.knobs.ranges)
    download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    assert len(hub.knobs.ranges) == before  # already complete: no request


def test_corrupted_bytes_are_rejected_and_nothing_is_kept(hub: FakeHub, tmp_path: Path) -> None:
    candidate = list_gguf("acme/Tiny-GGUF", endpoint=hub.url).candidates[0].files[0]
    hub.knobs.corrupt = True
    dest, partial = tmp_path / "store" / candidate.name, tmp_path / "partial"
    with pytest.raises(ChecksumMismatch, match="does not match"):
        download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    assert not dest.exists() and not any(partial.iterdir())


def test_a_server_ignoring_range_restarts_the_file_cleanly(hub: FakeHub, tmp_path: Path) -> None:
    candidate = list_gguf("acme/Tiny-GGUF", endpoint=hub.url).candidates[0].files[0]
    dest, partial = tmp_path / "store" / candidate.name, tmp_path / "partial"
    hub.knobs.cut_after = candidate.size // 2
    with pytest.raises(RemoteError):
        download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    hub.knobs.ignore_range = True
    download(candidate.url, dest, partial_dir=partial, sha256=candidate.sha256, size=candidate.size)
    assert dest.stat().st_size == candidate.size


def test_not_enough_disk_space_is_said_before_downloading(hub: FakeHub, small_disk: Path) -> None:
    candidate = list_gguf("acme/SmolLM2-135M-Instruct-GGUF", endpoint=hub.url).candidates[0].files[0]
    with pytest.raises(DiskFull, match="not enough disk space"):
        download(candidate.url, small_disk / "m.gguf", partial_dir=small_disk / "p", size=candidate.size)
    assert hub.knobs.served[candidate.name] == 0


@pytest.mark.parametrize(
    "name", ["../../escape-Q8_0.gguf", "sub/../../escape-Q8_0.gguf", "/tmp/escape-Q8_0.gguf"]
)
def test_a_listing_that_names_a_path_out_of_the_store_is_refused(
    hub: FakeHub, files: Files, tmp_path: Path, name: str
) -> None:
    hub.add_repo("acme/Evil-GGUF", {name: files.tiny["Q8_0"], "Tiny-Q4_K_M.gguf": files.tiny["Q4_K_M"]})
    with pytest.raises(HubError, match="not a safe path"):
        list_gguf("acme/Evil-GGUF", endpoint=hub.url)


@pytest.mark.parametrize("ref", ["../..", "acme/..", "acme/../../api/whoami", "-acme/x", "acme/a--b"])
def test_a_ref_is_a_repo_id_the_hub_accepts(ref: str) -> None:
    with pytest.raises(HubError, match="not a Hugging Face repo"):
        parse_repo_ref(ref)
