"""Ollama library models through the registry's v2 manifest/blob protocol (the Docker distribution API
Ollama's registry speaks): the manifest lists a GGUF "model" layer and small template, system, params and
license layers; blobs are fetched by sha256 digest (the registry redirects them to a CDN that serves
ranges). Names are ``[namespace/]model[:tag]``, namespace ``library`` and tag ``latest`` by default, as
Ollama's own name parsing does."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from models.errors import NotFound

DEFAULT_REGISTRY = "https://registry.ollama.ai"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MODEL_LAYER = "application/vnd.ollama.image.model"
_PART = r"[a-zA-Z0-9][a-zA-Z0-9._-]*"
_NAME = re.compile(rf"^(?:(?P<ns>{_PART})/)?(?P<model>{_PART})(?::(?P<tag>{_PART}))?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_SMALL_LAYER_BYTES = 1 << 20


class OllamaError(Exception):
    """The registry cannot give us the model; one line why."""


class OllamaNotFound(OllamaError, NotFound):
    """The registry has no such model, tag or blob (it answered 404)."""


@dataclass(frozen=True)
class OllamaRef:
    registry: str
    namespace: str
    name: str
    tag: str

    def manifest_url(self) -> str:
        return f"{self.registry}/v2/{self.namespace}/{self.name}/manifests/{self.tag}"

    def blob_url(self, digest: str) -> str:
        return f"{self.registry}/v2/{self.namespace}/{self.name}/blobs/{digest}"


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int


@dataclass(frozen=True)
class OllamaModel:
    ref: OllamaRef
    manifest_digest: str
    model: Layer
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] | None = None
    license: str | None = None
    config: dict[str, Any] | None = None
    ignored: tuple[str, ...] = ()  # layers not used here (adapters, projectors), by media type


def parse_ref(ref: str, registry: str = DEFAULT_REGISTRY) -> OllamaRef:
    """``ollama:llama3.2:1b``, ``ollama:user/model``, ``ollama:llama3.2`` (tag latest)."""
    text = ref.removeprefix("ollama:").strip()
    match = _NAME.match(text)
    if match is None:
        raise OllamaError(f"not an Ollama model name: {ref!r} (expected ollama:NAME[:TAG])")
    return OllamaRef(registry.rstrip("/"), match.group("ns") or "library", match.group("model"),
                     match.group("tag") or "latest")  # fmt: skip


def _get(client: httpx.Client, url: str, what: str, **kwargs: Any) -> httpx.Response:
    registry = url.split("/v2/")[0]
    try:
        response = client.get(url, **kwargs)
    except httpx.HTTPError as exc:
        raise OllamaError(f"cannot reach {registry}: {type(exc).__name__} {exc}".strip()) from None
    if response.status_code == 404:
        raise OllamaNotFound(f"{what} not found in {registry} (404)")
    if response.status_code != 200:
        raise OllamaError(f"{registry} answered {response.status_code} for {what}")
    return response


def _layer(raw: Any) -> Layer:
    # The digest names the blob's URL and the stored file: nothing but a sha256 may pass.
    if not isinstance(raw, dict) or not _DIGEST.match(str(raw.get("digest", ""))):
        raise OllamaError(f"bad layer in manifest: {raw!r}"[:200])
    return Layer(str(raw.get("mediaType", "")), str(raw["digest"]), int(raw.get("size", 0)))


def fetch_model(ref: OllamaRef, *, client: httpx.Client | None = None) -> OllamaModel:
    """The manifest and its small layers (each checked against its digest); not the GGUF itself."""
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0))
    what = f"{ref.name}:{ref.tag}" if ref.namespace == "library" else f"{ref.namespace}/{ref.name}:{ref.tag}"
    try:
        response = _get(http, ref.manifest_url(), f"ollama model {what}", headers={"Accept": MANIFEST_TYPE})
        try:
            manifest = response.json()
            layers = [_layer(raw) for raw in manifest.get("layers") or []]
            config_layer = _layer(manifest["config"]) if manifest.get("config") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise OllamaError(f"{what}: unreadable manifest ({exc})") from None
        models = [layer for layer in layers if layer.media_type == MODEL_LAYER]
        if not models:
            raise OllamaError(f"{what}: the manifest has no GGUF model layer")

        def small(media_suffix: str) -> str | None:
            layer = next((x for x in layers if x.media_type.endswith(media_suffix)), None)
            if layer is None or layer.size > _SMALL_LAYER_BYTES:
                return None
            data = _get(http, ref.blob_url(layer.digest), f"{what} {media_suffix} layer").content
            if "sha256:" + hashlib.sha256(data).hexdigest() != layer.digest:
                raise OllamaError(f"{what}: the {media_suffix} layer does not match its digest")
            return data.decode("utf-8", "replace")

        params_text, config_text = small(".params"), None
        if config_layer is not None and config_layer.size <= _SMALL_LAYER_BYTES:
            config_text = _get(http, ref.blob_url(config_layer.digest), f"{what} config").text
        ignored = tuple(x.media_type for x in layers if x.media_type.endswith((".adapter", ".projector")))
        return OllamaModel(
            ref=ref,
            manifest_digest="sha256:" + hashlib.sha256(response.content).hexdigest(),
            model=models[0],
            template=small(".template"),
            system=small(".system"),
            params=_json(params_text),
            license=small(".license"),
            config=_json(config_text),
            ignored=ignored,
        )
    finally:
        if own:
            http.close()


def _json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
