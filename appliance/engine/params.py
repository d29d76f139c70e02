"""Plain data passed to and from the llama.cpp module (importable without llama.cpp)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# llama.cpp's LLAMA_DEFAULT_SEED: a seed drawn at random.
RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: context size, batch sizes, threads, offload."""

    n_ctx: int | None = None  # None: 4096, or the trained context if smaller
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int = 1
    n_threads_batch: int = 1
    n_gpu_layers: int = 0
    flash_attn: str = "auto"
    n_seq_max: int = 1
    kv_type: str = "f16"  # f16 | q8_0 | q4_0 (quantized V needs flash attention)
    # Weights on the CPU repacked for its fastest kernels (llama.cpp's extra buffer types; llama-server's
    # --no-repack turns it off); None: as the engine judges this build and CPU (runtime.repacks_by_default).
    repack: bool | None = None
    # The GPUs to use, by llama.cpp's device names ("CUDA1", "CUDA0") in the order layers go to them (the
    # last holds the output layer); empty: llama.cpp's default choice. With several, ``tensor_split``
    # holds each one's share of the offloaded layers (layer counts), and ``main_gpu`` indexes the main one.
    devices: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    main_gpu: int = 0


@dataclass(frozen=True)
class DraftSpec:
    """A draft model to load beside the served one (appliance.engine.draft_model)."""

    path: Path
    options: LoadOptions
    p_min: float = 0.75  # a guess stops at a token the draft is less sure of


@dataclass(frozen=True)
class RequestLimits:
    """What one model's requests may ask for (the server settings of the same names)."""

    max_queue: int = 64  # requests waiting at once; one more is refused with 429
    request_deadline_s: float | None = None  # generation stops (finish_reason "length") past it
    max_messages: int | None = None  # messages in one chat
    max_tokens_cap: int | None = None  # tokens one request may generate; the default when it names none


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling settings. Defaults are llama-server's."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    grammar: str | None = None
    grammar_triggers: tuple[str, ...] = ()
    """With these, ``grammar`` holds only from where one of them first appears in the output (a lazy
    grammar: words first, then a tool call that must be valid); the grammar starts with the trigger."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    ignore_eos: bool = False  # llama.cpp's extension: never sample an end-of-generation token
    draft_max: int | None = None  # tokens guessed at most per step by prompt lookup; None: the model's

    @property
    def repeatable(self) -> bool:
        """Whether the request asks for the same output each time: a seed other than llama.cpp's
        "random" (LLAMA_DEFAULT_SEED, 0xFFFFFFFF; -1 in llama-server's API)."""
        return self.seed is not None and self.seed & 0xFFFFFFFF != RANDOM_SEED


@dataclass(frozen=True)
class GeneratedToken:
    """A sampled token, with its log-probability and the top alternatives when asked for."""

    token: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
