"""Configuration: one pydantic-settings model.

Precedence, lowest to highest: defaults, ``config.toml``, ``APPLIANCE_*`` environment variables (nested
with ``__``), then values passed in by the CLI. ``APPLIANCE_HOME`` relocates every state directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from appliance.units import parse_duration, parse_size

APP_NAME = "llm-appliance"


@dataclass(frozen=True)
class StateDirs:
    """Where the appliance keeps its state."""

    config: Path
    data: Path
    cache: Path
    logs: Path

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def api_keys_file(self) -> Path:
        """Where `appliance key new` writes keys, and the daemon reads them when none is configured."""
        return self.config / "api-keys"

    @property
    def lock_file(self) -> Path:
        """Held by the running daemon, so a second one on the same state refuses to start."""
        return self.data / "daemon.lock"

    @property
    def models(self) -> Path:
        """The model store: GGUF files here (or one folder down) can be served by name."""
        return self.data / "models"

    @property
    def derived(self) -> Path:
        """Derived models (Ollama's /api/create and /api/copy): a name and settings over a stored file."""
        return self.data / "derived"


def state_dirs(home: Path | None = None) -> StateDirs:
    """The state directories: under ``home`` when given, else platformdirs' user dirs. Settings.dirs is
    what the appliance uses; this alone reads no environment."""
    if home is not None:
        root = home.expanduser()
        return StateDirs(config=root, data=root / "data", cache=root / "cache", logs=root / "logs")
    dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
    return StateDirs(
        config=Path(dirs.user_config_dir),
        data=Path(dirs.user_data_dir),
        cache=Path(dirs.user_cache_dir),
        logs=Path(dirs.user_log_dir),
    )


def _home_from_env() -> Path | None:
    # Only to find config.toml, before there are settings to ask (Settings.home reads the same variable).
    home = os.environ.get("APPLIANCE_HOME")
    return Path(home) if home else None


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    """Address the daemon listens on. Any other than loopback needs an API key (or insecure_no_auth)."""
    port: int = Field(11435, ge=0, le=65535)
    """TCP port of the HTTP API (0 picks a free one)."""
    api_key: SecretStr | None = None
    """When set, every API request needs `Authorization: Bearer <key>` or `x-api-key` (see public_paths)."""
    api_keys: list[SecretStr] = []
    """More keys, each as good as api_key (one per client, so one can be revoked alone)."""
    api_keys_file: Path | None = None
    """A file of keys, one per line (`#` starts a comment); empty: `api-keys` in the config directory,
    where `appliance key new` writes. Read again on SIGHUP."""
    insecure_no_auth: bool = False
    """Serve a non-loopback address without any key: everyone who reaches the port may use every route."""
    public_paths: list[str] = ["/health"]
    """Paths that need no key even when keys are set."""
    allowed_hosts: list[str] = []
    """Host names clients may reach the daemon by, besides loopback, this machine's own names and addresses
    and its tailnet name (`.example.com` also admits its subdomains; `*` turns the check off). Other Host
    headers are refused, so a web page cannot reach the daemon through DNS rebinding."""
    cors_origins: list[str] = []
    """Web origins (`https://app.example`) whose pages may call the API from a browser; requests from
    any other origin are refused. Empty: none (clients that send no Origin, like curl and SDKs, work)."""
    max_body_size: str = "16MiB"
    """Largest request body; a larger one gets 413."""
    max_messages: int = Field(2048, ge=1)
    """Most messages one chat request may hold."""
    max_tokens_cap: int | None = Field(32768, ge=1)
    """Most tokens one request may generate (and the limit when it names none); empty: its context."""
    max_concurrent_per_key: int = Field(32, ge=1)
    """Requests one API key may have in flight at once; one more gets 429 with Retry-After."""
    max_queue: int = Field(64, ge=1)
    """Requests that may wait for the model at once; one more gets 429 with Retry-After."""
    request_deadline_s: float | None = Field(1800, gt=0)
    """Longest a request may take from arrival; past it, generation stops with finish_reason "length"."""
    shutdown_timeout_s: float = Field(30, ge=0)
    """On SIGTERM or Ctrl-C, how long requests in flight may take to finish; then streams end with
    finish_reason "length" and waiting requests get 503."""
    log_prompts: bool = False
    """Write prompt and reply text to the request log (off: only sizes, timings and status)."""
    responses_kept: int = Field(1000, ge=0)
    """Responses (`POST /v1/responses` with `store`, OpenAI's default) kept in memory, never on disk, for
    `previous_response_id` and `GET /v1/responses/{id}`; past it the oldest go. 0: none kept."""
    responses_kept_size: str = "64MiB"
    """The most memory kept responses may hold (each counted with its whole conversation, as JSON)."""

    @field_validator("max_body_size")
    @classmethod
    def _body_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/?#\s]+", origin):
                raise ValueError(f"not an origin: {origin!r} (scheme://host[:port], no path)")
        return [o.lower() for o in value]


class ModelSettings(BaseModel):
    default: str | None = None
    """Model served when `serve` gets none: a .gguf path. Empty means the embedded default model."""
    alias: str | None = None
    """Model id clients use; derived from the file name when empty."""
    n_ctx: int | None = Field(None, ge=64)
    """KV cache size in tokens, shared by the parallel slots; empty: 4096 per slot (less if the model was
    trained on less or memory is short)."""
    n_parallel: int | None = Field(None, ge=1, le=64)
    """Requests generated at once (continuous batching slots); empty: as many as memory allows, up to 4."""
    n_threads: int | None = Field(None, ge=1)
    """Threads for generation; empty means the physical core count."""
    n_batch: int = Field(2048, ge=1)
    """Tokens decoded at most in one step, all slots together (llama-server's -b, 2048): prompt chunks
    read beside the generating slots' next tokens; llama.cpp runs them n_ubatch at a time."""
    n_ubatch: int = Field(512, ge=1)
    """Physical batch size for prompt processing."""
    n_gpu_layers: int | None = None
    """Layers offloaded to a GPU (-1: all, 0: none); empty lets the planner choose."""
    gpus: list[int] | None = None
    """GPUs models may use, by the indices `appliance hw` lists (e.g. [0, 1]); empty: every GPU the build
    can use. Layers are split across several when a model needs them."""
    flash_attn: Literal["auto", "on", "off"] = "auto"
    """Flash attention: auto lets llama.cpp decide per backend."""
    kv_type: Literal["f16", "q8_0", "q4_0"] | None = None
    """KV cache type (q8_0 and q4_0 need flash attention); empty: f16, q8_0 when only that fits."""
    draft_max: int = Field(16, ge=0, le=64)
    """Speculative decoding by prompt lookup: at most this many tokens guessed from the prompt and the
    reply so far, checked in one decode (the output is the same; a reply that repeats its prompt comes
    several times faster); 0 turns it off (llama-server's --draft-max with --spec-type ngram)."""
    draft_model: str | None = None
    """Speculative decoding with a draft model (llama-server's --model-draft): an installed model's name or a
    .gguf path, a small model sharing the served model's vocabulary (SmolLM2-135M for SmolLM2-1.7B, a
    0.5B Qwen for a 7B Qwen). Each slot's next tokens are guessed by it, greedily, up to `draft_max` a step,
    and checked by the served model in one decode: the output is the same. It is used only while its
    guesses pay on this machine (a GPU, a draft much smaller than the model), and replaces prompt lookup
    where it is loaded. Its weights and KV cache are planned beside the model's; where they do not fit,
    it is left out (`appliance plan` says so). Empty: none."""
    draft_p_min: float = Field(0.75, ge=0, le=1)
    """A draft model's guess stops at a token it is less sure of than this (llama-server's --draft-p-min)."""
    draft_gpu_layers: int | None = None
    """Layers of the draft model on the GPU (-1: all, 0: none; llama-server's -ngld); empty: all when the
    served model is wholly on the GPU and they fit there, else none."""
    cpu_repack: bool | None = None
    """Weights on the CPU repacked into the layouts of its fastest kernels (llama.cpp's extra buffer
    types: interleaved blocks, AMX tiles; false is llama-server's --no-repack); empty: on, except where
    this llama.cpp build's AMX kernels would run, which crash on some CPUs (llama.cpp issue 20824)."""
    prompt_cache: str = "auto"
    """Host memory per loaded model for the KV of conversations whose slot another request took, so
    their next turn reads only what is new (llama-server's --cache-ram): a size ("2GiB"), "0" off;
    auto: a sixteenth of the machine's RAM, at most 8 GiB."""
    keep_alive: str = "5m"
    """How long a model loaded on demand stays loaded after its last request ("30s", "5m", "1h"; -1: until
    its memory is needed). The model `serve` starts with stays loaded unless memory is needed."""
    preload: bool = True
    """Load the model `serve` starts with at once; false (`serve --no-preload`): the daemon starts with no
    model loaded and loads it on its first request, then unloads it after `keep_alive`, as Ollama does."""
    max_loaded: int = Field(3, ge=1)
    """Models loaded at once at most; the least recently used idle one makes room."""
    load_timeout_s: float = Field(300, gt=0)
    """Longest a request waits for its model to load (and for busy models to free the memory)."""

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("prompt_cache")
    @classmethod
    def _cache_size(cls, value: str) -> str:
        if value != "auto":
            parse_size(value)
        return value

    def prompt_cache_bytes(self, ram_bytes: int) -> int:
        """The prompt cache's bound per model on a machine with ``ram_bytes`` of RAM."""
        if self.prompt_cache == "auto":
            return min(8 << 30, ram_bytes // 16)
        return parse_size(self.prompt_cache)

    @field_validator("gpus")
    @classmethod
    def _gpu_indices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(i < 0 for i in value) or len(set(value)) != len(value)):
            raise ValueError(f"GPU indices must be distinct and not negative, at least one: {value}")
        return value


class ModelMessage(BaseModel):
    """A turn a model's configuration puts before every chat (Ollama's MESSAGE)."""

    role: Literal["system", "user", "assistant"]
    content: str


class PerModelSettings(BaseModel):
    """Settings of one served model (`[models."ID"]`, keyed by its model id): the names it also answers
    to, and the defaults its requests start from (a request's own value wins)."""

    aliases: list[str] = []
    """More names the model answers to (`["gpt-4o-mini"]`: a client that hard-codes a name reaches this
    model); the answer's `model` field says the name the client asked for."""
    temperature: float | None = Field(None, ge=0)
    """Sampling temperature for requests that give none (0: greedy)."""
    top_p: float | None = Field(None, ge=0, le=1)
    """Nucleus sampling for requests that give none."""
    top_k: int | None = Field(None, ge=0)
    """Top-k sampling for requests that give none (0: off)."""
    min_p: float | None = Field(None, ge=0, le=1)
    """Min-p sampling for requests that give none."""
    repeat_penalty: float | None = Field(None, ge=0)
    """Repetition penalty for requests that give none (1: off)."""
    seed: int | None = None
    """Sampling seed for requests that give none."""
    system: str | None = None
    """System prompt put first in a chat that has no system message of its own."""
    n_ctx: int | None = Field(None, ge=64)
    """KV cache size in tokens for this model, shared by its slots; empty: `model.n_ctx` (needs a restart)."""
    n_parallel: int | None = Field(None, ge=1, le=64)
    """Requests this model generates at once; empty: `model.n_parallel` (needs a restart)."""
    chat_template_file: Path | None = None
    """A Jinja chat template used instead of the one in the GGUF (llama-server's --chat-template-file);
    its model family's tool-call and thinking format is recognised from it (applies at the next load)."""
    stop: list[str] = []
    """Stop sequences for requests that give none."""
    num_ctx: int | None = Field(None, ge=64)
    """Context of one request in tokens (Ollama's `num_ctx`), for requests that give none: at most one
    slot's context bounds them; more reloads the model with larger slots when they fit."""
    messages: list[ModelMessage] = []
    """Turns put before every chat's own (after its system prompt), as Ollama's MESSAGE lines."""
    reasoning: bool | Literal["low", "medium", "high"] | None = None
    """Thinking on or off, or how hard, for chats that do not say (a request's own switch wins)."""
    kv_type: Literal["f16", "q8_0", "q4_0"] | None = None
    """KV cache type of this model (q8_0 and q4_0 need flash attention); empty: the planner picks."""
    draft_max: int | None = Field(None, ge=0, le=64)
    """Tokens guessed at most per step by prompt lookup for this model (0: off); empty: `model.draft_max`."""
    draft_model: str | None = None
    """The draft model of this model (an installed name or a .gguf path; "" for none); empty:
    `model.draft_model` (needs a restart)."""

    @field_validator("aliases")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not alias.strip():
                raise ValueError("an alias cannot be empty")
        return value


class TailscaleSettings(BaseModel):
    socket: str = "/var/run/tailscale/tailscaled.sock"
    """tailscaled's LocalAPI socket; when it is absent, Tailscale targets are reported unavailable."""


class TailscaleTarget(BaseModel):
    """A remote found on the tailnet: by host name, or the first online peer with a tag."""

    hostname: str | None = None
    tag: str | None = None
    port: int = Field(8000, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"

    @model_validator(mode="after")
    def _one_way(self) -> TailscaleTarget:
        if (self.hostname is None) == (self.tag is None):
            raise ValueError("a tailscale target needs exactly one of hostname or tag")
        return self


class RemoteTimeouts(BaseModel):
    connect_s: float = Field(3.0, gt=0)
    """Connecting to the remote."""
    first_byte_s: float = Field(60.0, gt=0)
    """From sending a request to the first byte of the answer (prompt processing happens here)."""
    between_chunks_s: float = Field(30.0, gt=0)
    """Longest silence inside a streamed answer before it counts as failed."""


class RemoteSettings(BaseModel):
    """A remote OpenAI-compatible server (vLLM, SGLang, another appliance) to escalate to."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["vllm", "sglang", "openai"] = "openai"
    base_url: str | None = None
    tailscale: TailscaleTarget | None = None
    api_key_file: Path | None = None
    api_key_env: str | None = None
    models: dict[str, str] = {}
    """Local model name -> the remote's name for it; a model served under the same name needs no entry."""
    embeddings: bool | None = None
    """Whether the remote serves embeddings (/v1/embeddings, /api/embed escalate to it). Unset: SGLang's
    answer from /get_model_info, else yes for kind openai and no for vllm and sglang."""
    vision: bool = False
    """Whether the remote's models read images: a chat carrying images escalates to it (the models here
    read text only)."""
    timeouts: RemoteTimeouts = RemoteTimeouts()

    @model_validator(mode="after")
    def _one_address(self) -> RemoteSettings:
        if (self.base_url is None) == (self.tailscale is None):
            raise ValueError(f"remote {self.name}: give exactly one of base_url or tailscale")
        return self

    def api_key(self) -> SecretStr | None:
        """The key from api_key_file or api_key_env, read when asked (files can be rotated)."""
        if self.api_key_file is not None:
            try:
                return SecretStr(self.api_key_file.expanduser().read_text().strip())
            except OSError:
                return None
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            return SecretStr(value) if value else None
        return None


class RoutingSettings(BaseModel):
    escalation: Literal["auto", "never"] = "auto"
    """never: everything stays on this machine (remotes are still probed and listed)."""
    models: dict[str, Literal["auto", "never", "always"]] = {}
    """Per local model: auto, never (always local), always (always a remote while one is healthy)."""
    max_queue_wait_s: float = Field(10.0, ge=0)
    """Escalate for load when a request would wait longer than this for a local slot."""
    probe_interval_s: float = Field(5.0, gt=0)
    """How often remotes are probed (health, models, load) and Tailscale targets resolved."""


class StoreSettings(BaseModel):
    ollama_registry: str = "https://registry.ollama.ai"
    """Registry `appliance pull ollama:NAME[:TAG]` pulls from."""
    discover: bool = True
    """List and serve GGUFs the Hugging Face cache, Ollama and LM Studio already hold (never deleted)."""


class PlannerSettings(BaseModel):
    max_ram: str | None = None
    """Cap on the RAM a model may use, e.g. "6GiB" (no further margin is taken off a cap)."""
    max_vram: str | None = None
    """Cap on the GPU memory a model may use, e.g. "20GiB"."""
    ram_margin: str | None = None
    """RAM kept free for the system and other apps; empty: 10% of RAM, between 256 MiB and 2 GiB."""
    vram_margin: str = "512MiB"
    """GPU memory kept free beyond the planner's estimate."""
    quality_floor_bpw: float = 3.3
    """Quantizations below this many bits per weight are chosen only when nothing better fits."""

    @field_validator("max_ram", "max_vram", "ram_margin", "vram_margin")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value


class Settings(BaseSettings):
    """The appliance's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    server: ServerSettings = ServerSettings()
    model: ModelSettings = ModelSettings()
    planner: PlannerSettings = PlannerSettings()
    store: StoreSettings = StoreSettings()
    tailscale: TailscaleSettings = TailscaleSettings()
    remotes: list[RemoteSettings] = []
    routing: RoutingSettings = RoutingSettings()
    models: dict[str, PerModelSettings] = {}
    """Per served model id (`[models."smollm2-135m-instruct"]`): aliases, sampling defaults, system prompt,
    context and slots."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the daemon."""
    home: Path | None = None
    """Where the state lives (`config.toml`, `data/` with the model store, `cache/`, `logs/`); empty: the
    platform's user dirs. Set by `APPLIANCE_HOME`; in a config file it moves data, cache and logs (the file
    itself is found by `APPLIANCE_HOME` or `--config`)."""

    @field_validator("home", mode="before")
    @classmethod
    def _no_home(cls, value: Any) -> Any:
        return None if value == "" else value  # APPLIANCE_HOME= (empty) is unset, as it always was

    @field_validator("models")
    @classmethod
    def _aliases_unique(cls, value: dict[str, PerModelSettings]) -> dict[str, PerModelSettings]:
        owner: dict[str, str] = {}
        for model_id, per_model in value.items():
            for alias in per_model.aliases:
                if alias in value and alias != model_id:
                    raise ValueError(f"alias '{alias}' of {model_id} is the id of another model")
                if owner.setdefault(alias, model_id) != model_id:
                    raise ValueError(f"alias '{alias}' names two models: {owner[alias]} and {model_id}")
        return value

    def per_model(self, *names: str) -> PerModelSettings:
        """The `[models."NAME"]` table of the first of ``names`` that has one (a model's id `name:tag`,
        then its bare `name`), else an empty one."""
        return next((self.models[n] for n in names if n in self.models), None) or PerModelSettings()

    def for_model(self, *names: str) -> Settings:
        """These settings as the planner should see them for the model ``names`` name (as `per_model`):
        its own `n_ctx`, `n_parallel`, `kv_type` and `draft_model` over those of `[model]`."""
        per_model = self.per_model(*names)
        keys = ("n_ctx", "n_parallel", "kv_type", "draft_model")
        own = {k: v for k in keys if (v := getattr(per_model, k)) is not None}
        if not own:
            return self
        return self.model_copy(update={"model": self.model.model_copy(update=own)})

    def model_id_of(self, name: str) -> str:
        """The model id ``name`` stands for: the model whose aliases hold it, else ``name`` itself."""
        for model_id, per_model in self.models.items():
            if name in per_model.aliases:
                return model_id
        return name

    @property
    def dirs(self) -> StateDirs:
        """The state directories these settings name: every command and the daemon take them from here."""
        return state_dirs(self.home)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file") or state_dirs(_home_from_env()).config_file
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the file, the environment and ``overrides`` (CLI flags, nested dicts).

    ``overrides`` with value None are dropped so an absent CLI flag never masks the file or environment.
    """
    cls = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        cls = FileSettings
    return cls(**_drop_none(overrides))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked, for `appliance config show`."""
    return settings.model_dump(mode="json")
