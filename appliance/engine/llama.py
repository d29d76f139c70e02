"""The one module that talks to llama.cpp (through llama-cpp-python's ctypes bindings).

It owns a model and its context and exposes plain Python: tokenize, generate token by token with a
per-request sampler chain, embed. Not thread-safe: one thread (the engine's worker) drives it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import llama_grammar

from appliance.engine.int_range import integer_range_rule
from appliance.engine.params import GeneratedToken, LoadOptions, SamplingParams
from appliance.errors import ContextOverflow, EngineFailure, InvalidRequest, ModelLoadFailed

log = logging.getLogger(__name__)

_FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


DEFAULT_N_CTX = 4096


_KV_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}


class _LogBridge:
    """Routes llama.cpp's log lines into Python logging, keeping recent errors for messages."""

    def __init__(self) -> None:
        self.recent_errors: deque[str] = deque(maxlen=8)
        self.captured: list[str] | None = None  # every line, while a dry run listens
        self._partial = ""
        self._level = 2
        self._lock = threading.Lock()
        self.callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line.
        message = text.decode("utf-8", errors="replace")
        with self._lock:
            if level != 5:
                self._level = level
            self._partial += message
            if not self._partial.endswith("\n"):
                return
            line, self._partial = self._partial.rstrip("\n"), ""
            level = self._level
            if self.captured is not None:
                self.captured.append(line)
        if level >= 4:
            self.recent_errors.append(line)
            log.warning("llama.cpp: %s", line)
        else:
            log.debug("llama.cpp: %s", line)


_BRIDGE: _LogBridge | None = None
_INIT_LOCK = threading.Lock()


def _init_backend() -> _LogBridge:
    global _BRIDGE
    with _INIT_LOCK:
        if _BRIDGE is None:
            _BRIDGE = _LogBridge()
            llama_cpp.llama_log_set(_BRIDGE.callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
        return _BRIDGE


def supports_gpu_offload() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU."""
    _init_backend()
    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's one-line summary of the CPU features it was built to use."""
    _init_backend()
    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


# enum ggml_backend_dev_type, in ggml-backend.h's order
_DEVICE_TYPES = ("cpu", "gpu", "igpu", "accel")


def _ggml_function(name: str, restype: Any, *argtypes: Any) -> Any:
    """A private ctypes binding of a ggml function (argtypes set on it bind nothing of llama_cpp's).

    llama_cpp._ggml loads libggml (the backend registry); the device calls live in libggml-base, which
    libggml links, so the dynamic linker finds them through it; where it does not (Windows), load it.
    """
    from llama_cpp import _ctypes_extensions, _ggml

    prototype = ctypes.CFUNCTYPE(restype, *argtypes)
    try:
        return prototype((name, _ggml.libggml))
    except AttributeError:
        base = _ctypes_extensions.load_shared_library("ggml-base", Path(_ggml.libggml_base_path))
        return prototype((name, base))


def backend_devices() -> list[tuple[str, str, str, int, int]]:
    """The devices llama.cpp's build can run on, as ggml's backend registry reports them.

    Each is (name, description, type, free_bytes, total_bytes), e.g. ("CUDA0", "NVIDIA GeForce RTX 4090",
    "gpu", ...) or ("CPU", "AMD Ryzen 9 7950X 16-Core Processor", "cpu", ...); type is cpu, gpu, igpu
    (integrated, sharing host memory) or accel (BLAS, AMX: they help the CPU, they hold no layers).
    Raises OSError or AttributeError where the library lacks the registry (not this pinned release).
    """
    _init_backend()  # llama_backend_init loads the backends of a build with dynamic backends
    size_t, device = ctypes.c_size_t, ctypes.c_void_p
    if _ggml_function("ggml_backend_reg_count", size_t)() == 0:
        _ggml_function("ggml_backend_load_all", None)()
    count = _ggml_function("ggml_backend_dev_count", size_t)
    get = _ggml_function("ggml_backend_dev_get", device, size_t)
    name = _ggml_function("ggml_backend_dev_name", ctypes.c_char_p, device)
    description = _ggml_function("ggml_backend_dev_description", ctypes.c_char_p, device)
    dev_type = _ggml_function("ggml_backend_dev_type", ctypes.c_int, device)
    memory = _ggml_function(
        "ggml_backend_dev_memory", None, device, ctypes.POINTER(size_t), ctypes.POINTER(size_t)
    )
    devices = []
    for i in range(count()):
        dev = get(i)
        if not dev:
            continue
        free, total = size_t(0), size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = dev_type(dev)
        devices.append(
            (
                (name(dev) or b"").decode("utf-8", errors="replace"),
                (description(dev) or b"").decode("utf-8", errors="replace"),
                _DEVICE_TYPES[kind] if 0 <= kind < len(_DEVICE_TYPES) else "unknown",
                int(free.value),
                int(total.value),
            )
        )
    return devices


class _SchemaConverter(llama_grammar.SchemaConverter):
    """llama-cpp-python's converter, plus the integer bounds it leaves out."""

    def visit(self, schema: Any, name: str) -> str:
        bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if isinstance(schema, dict) and schema.get("type") == "integer" and any(b in schema for b in bounds):
            low = schema.get("minimum")
            if "exclusiveMinimum" in schema:
                low = max(low if low is not None else -(10**18), math.floor(schema["exclusiveMinimum"]) + 1)
            high = schema.get("maximum")
            if "exclusiveMaximum" in schema:
                high = min(high if high is not None else 10**18, math.ceil(schema["exclusiveMaximum"]) - 1)
            low = None if low is None else math.ceil(low)
            high = None if high is None else math.floor(high)
            rule_name = name or "root"
            if rule_name in llama_grammar.RESERVED_NAMES:
                rule_name += "-"
            rule: str = self._add_rule(rule_name, f"({integer_range_rule(low, high)}) space")
            return rule
        result: str = super().visit(schema, name)
        return result


MAX_GRAMMAR_DEPTH = 1000
"""llama.cpp parses a grammar recursively, one level per group: a schema whose grammar nests deeper (a
``maxLength`` or a pattern's ``{0,N}`` in the tens of thousands, which the converter spells as N nested
optional groups) overflows its stack and kills the whole process, so such a schema is refused."""


def grammar_depth(grammar: str) -> int:
    """How deeply the groups of a GBNF grammar nest (brackets inside literals and classes not counted)."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in grammar:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in '"[':
            quote = "]" if char == "[" else char
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


_REPETITION = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _too_long(schema: Any) -> bool:
    """Whether ``schema`` asks for a string length, or a pattern for a repetition, over
    MAX_GRAMMAR_DEPTH: checked before converting, as the grammar grows with the number (a maxLength of
    10**9 would exhaust memory first)."""
    if isinstance(schema, list):
        return any(_too_long(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    for key in ("minLength", "maxLength"):
        value = schema.get(key)
        if isinstance(value, int | float) and value > MAX_GRAMMAR_DEPTH:
            return True
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        counts = (int(n) for match in _REPETITION.finditer(pattern) for n in match.groups() if n)
        if any(n > MAX_GRAMMAR_DEPTH for n in counts):
            return True
    return any(_too_long(value) for value in schema.values())


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar accepting exactly the JSON documents valid under ``schema``."""
    too_large = InvalidRequest(
        f"the JSON schema is too large to enforce: a string length or a pattern's repetition over "
        f"{MAX_GRAMMAR_DEPTH}, or nesting that deep",
        param="response_format",
    )
    if _too_long(schema):
        raise too_large
    try:
        converter = _SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "request")
        converter.visit(resolved, "")
        grammar: str = converter.format_grammar()
    except Exception as exc:  # the converter raises bare Exceptions for schemas it cannot handle
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc
    if grammar_depth(grammar) > MAX_GRAMMAR_DEPTH:
        raise too_large
    return grammar


@dataclass(frozen=True)
class DryRun:
    """llama.cpp's own figures for a load, from a dry run that allocates nothing."""

    kv_bytes: int
    compute_bytes: dict[str, int]  # per backend buffer ("CPU", "CUDA0", "CUDA_Host", ...)
    output_bytes: int


_MIB = 1 << 20
_BUFFER_LINE = re.compile(r"(\S+)\s+(compute|output) buffer size =\s+([\d.]+) MiB")
_KV_LINE = re.compile(r"(?:llama_kv_cache|llama_memory_recurrent): size =\s+([\d.]+) MiB")


# An empty, NULL-terminated device list: llama.cpp then leaves every GPU alone (no offloaded layers, and
# no GPU compute buffer for large batches, which it reserves even with 0 layers when it has a GPU).
_NO_DEVICES = (ctypes.c_void_p * 1)(None)


def _model_params(options: LoadOptions) -> Any:
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = options.n_gpu_layers
    if options.n_gpu_layers == 0:  # a CPU plan stays off the GPU entirely
        mparams.devices = ctypes.addressof(_NO_DEVICES)
    return mparams


def dry_run(path: Path, options: LoadOptions) -> DryRun:
    """Plan the buffers of a load without allocating them (``no_alloc``), and read llama.cpp's sizes."""
    bridge = _init_backend()
    mparams = _model_params(options)
    mparams.no_alloc = True
    mparams.load_mode = 0  # LLAMA_LOAD_MODE_NONE: the dry run needs mmap off
    with _INIT_LOCK:
        bridge.captured = []
        try:
            model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
            if not model:
                raise ModelLoadFailed(f"cannot read model {path}: " + "; ".join(bridge.recent_errors))
            try:
                ctx = llama_cpp.llama_init_from_model(model, _context_params(options, model))
                if not ctx:
                    raise ModelLoadFailed(f"llama.cpp cannot plan a context for {path}")
                llama_cpp.llama_free(ctx)
            finally:
                llama_cpp.llama_model_free(model)
            lines = bridge.captured
        finally:
            bridge.captured = None
    kv = sum(float(m.group(1)) for line in lines if (m := _KV_LINE.search(line)))
    compute: dict[str, int] = {}
    output = 0.0
    for line in lines:
        match = _BUFFER_LINE.search(line)
        if not match:
            continue
        if match.group(2) == "compute":
            compute[match.group(1)] = compute.get(match.group(1), 0) + int(float(match.group(3)) * _MIB)
        else:
            output += float(match.group(3))
    return DryRun(int(kv * _MIB), compute, int(output * _MIB))


def _context_params(options: LoadOptions, model: Any) -> Any:
    n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = options.n_ctx or min(DEFAULT_N_CTX, n_ctx_train)
    cparams.n_batch = options.n_batch
    cparams.n_ubatch = min(options.n_ubatch, options.n_batch)
    cparams.n_seq_max = options.n_seq_max
    cparams.n_threads = options.n_threads
    cparams.n_threads_batch = options.n_threads_batch
    cparams.flash_attn_type = _FLASH_ATTN[options.flash_attn]
    cparams.type_k = cparams.type_v = _KV_TYPES[options.kv_type]
    cparams.swa_full = False  # libllama defaults it on; llama-server turns it off (windows stay small)
    # One KV stream of n_ctx / n_seq_max cells per slot: a slot attends to its own cells only, so batching
    # does not change its output (and llama.cpp caps a unified cache at the trained context).
    cparams.kv_unified = False
    cparams.no_perf = True
    return cparams


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


class Sampler:
    """A request's sampler chain, and its grammar kept apart from it, as llama.cpp's own server does
    (common/sampling.cpp, common_sampler_sample): the chain picks a token from the raw logits and the
    grammar only checks that one token; only when the grammar rejects it is the whole vocabulary run
    through the grammar and sampled again. Constraining every token over the whole vocabulary halves the
    speed of structured output; this way most tokens cost one check. At temperature 0 the result is the
    same token: the best token, when the grammar allows it, is also the best allowed one."""

    def __init__(self, chain: Any, grammar: Any = None, n_vocab: int = 0) -> None:
        self.chain = chain
        self.grammar = grammar
        if grammar is None:
            return
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._view, self._array = self._candidates(n_vocab)
        self._one, self._one_array = self._candidates(1)

    def sample_checked(self, logits: Any) -> int:
        """Sample with the grammar checking the chain's choice (see the class); accepts the token."""
        chain, grammar = self.chain, self.grammar
        candidates = ctypes.byref(self._array)
        self._reset(logits)
        llama_cpp.llama_sampler_apply(chain, candidates)
        token = int(self._view["id"][self._array.selected])
        self._one[0] = (token, 1.0, 0.0)
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self._one_array))
        if self._one["logit"][0] == -math.inf:  # rejected: constrain the whole vocabulary, sample again
            self._reset(logits)
            llama_cpp.llama_sampler_apply(grammar, candidates)
            allowed = np.isfinite(self._view["logit"])  # by id: the grammar keeps the order
            llama_cpp.llama_sampler_apply(chain, candidates)
            token = int(self._view["id"][self._array.selected])
            if not allowed[token]:
                # The chain banned every token the grammar allows (ignore_eos once the grammar is
                # complete leaves nothing): accepting its pick would make llama.cpp throw, which aborts
                # the whole process. Take the likeliest allowed token instead (there the end of text).
                token = self._likeliest(logits, allowed)
        llama_cpp.llama_sampler_accept(grammar, token)
        llama_cpp.llama_sampler_accept(chain, token)
        return token

    def _likeliest(self, logits: Any, allowed: np.ndarray[Any, Any]) -> int:
        ids = self._ids[allowed]
        if not len(ids):
            raise EngineFailure("the grammar allows no next token")
        raw = np.ctypeslib.as_array(logits, shape=(len(self._ids),))
        return int(ids[np.argmax(raw[ids])])

    @staticmethod
    def _candidates(n: int) -> tuple[np.ndarray[Any, Any], Any]:
        """A llama_token_data_array of ``n`` entries, and a numpy view of its data (which keeps the
        data alive)."""
        data = (llama_cpp.llama_token_data * n)()
        view = np.frombuffer(memoryview(data).cast("B"), dtype=_TOKEN_DATA)
        pointer = ctypes.cast(data, llama_cpp.llama_token_data_p)
        return view, llama_cpp.llama_token_data_array(pointer, n, -1, False)

    def _reset(self, logits: Any) -> None:
        n = len(self._ids)
        self._view["id"] = self._ids  # samplers sort and shrink the array in place
        self._view["logit"] = np.ctypeslib.as_array(logits, shape=(n,))
        self._view["p"] = 0.0
        self._array.size, self._array.selected, self._array.sorted = n, -1, False

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)


class LlamaModel:
    """A loaded model with one context. Only one thread may use an instance."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        bridge = _init_backend()
        self.path = path
        self.options = options
        mparams = _model_params(options)
        bridge.recent_errors.clear()
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            detail = "; ".join(bridge.recent_errors) or "llama.cpp could not read it"
            raise ModelLoadFailed(f"cannot load model {path}: {detail}")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        if options.n_ctx is not None and options.n_ctx // options.n_seq_max > self.n_ctx_train:
            llama_cpp.llama_model_free(model)
            raise ModelLoadFailed(
                f"a context of {options.n_ctx // options.n_seq_max} tokens per slot exceeds what {path.name} "
                f"was trained for ({self.n_ctx_train})"
            )
        ctx = llama_cpp.llama_init_from_model(model, _context_params(options, model))
        if not ctx:
            llama_cpp.llama_model_free(model)
            detail = "; ".join(bridge.recent_errors) or "not enough memory for the context?"
            raise ModelLoadFailed(f"cannot create a context for {path}: {detail}")
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self._batch = llama_cpp.llama_batch_init(max(options.n_batch, options.n_seq_max), 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] | None = None
        # Per sequence, the tokens whose KV is in the cache, in order: the prefix a next request may reuse.
        self._cached: list[list[int]] = [[] for _ in range(options.n_seq_max)]
        self._prefix_reuse = not (
            llama_cpp.llama_model_is_recurrent(model)
            or llama_cpp.llama_model_is_hybrid(model)
            or llama_cpp.llama_model_n_swa(model) > 0
        )
        self.metadata = self._read_metadata()

    # -- metadata and vocabulary ------------------------------------------------------------

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        size = 4096
        buf = ctypes.create_string_buffer(size)
        for i in range(llama_cpp.llama_model_meta_count(self._model)):
            llama_cpp.llama_model_meta_key_by_index(self._model, i, buf, size)
            key = buf.value.decode("utf-8", errors="replace")
            needed = llama_cpp.llama_model_meta_val_str_by_index(self._model, i, buf, size)
            if needed >= size:
                big = ctypes.create_string_buffer(needed + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self._model, i, big, needed + 1)
                out[key] = big.value.decode("utf-8", errors="replace")
            else:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    @property
    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    @property
    def eos_token(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self._vocab))

    def token_text(self, token: int) -> str:
        """The vocabulary entry of ``token`` as stored (special tokens included)."""
        if token < 0:
            return ""
        return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def control_texts(self) -> list[str]:
        """The texts of the tokens that only a tokenization parsing special tokens produces (control and
        unknown tokens: llama.cpp's tokenizer_st_partition matches user-defined ones in any case)."""
        gated = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        return [
            self.token_text(t)
            for t in range(self.n_vocab)
            if llama_cpp.llama_vocab_get_attr(self._vocab, t) & gated
        ]

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _end_of_generation_tokens(self) -> list[int]:
        if self._eog_tokens is None:
            self._eog_tokens = [t for t in range(self.n_vocab) if self.is_end_of_generation(t)]
        return self._eog_tokens

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids for ``text``. Thread-safe: it only reads the vocabulary."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(tokens[:n])
            capacity = -n

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` adds to the output text (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        value = buf.raw[:n]
        self._pieces[token] = value
        return value

    # -- sequences: the batching engine's primitives -------------------------------------------

    @property
    def n_seq(self) -> int:
        return self.options.n_seq_max

    @property
    def n_ctx_per_seq(self) -> int:
        """Tokens one sequence may hold: the context is shared equally by the parallel slots."""
        return self.n_ctx // self.options.n_seq_max

    @property
    def kv_cells_used(self) -> int:
        """Tokens held in the KV cache, all sequences together (read from any thread: a snapshot)."""
        return sum(len(tokens) for tokens in self._cached)

    def cached_tokens(self, seq: int) -> list[int]:
        return self._cached[seq]

    def forget(self, seq: int | None = None) -> None:
        """Drop the KV cache of one sequence, or of all."""
        if seq is None:
            llama_cpp.llama_memory_clear(self._memory, True)
            self._cached = [[] for _ in range(self.n_seq)]
        else:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
            self._cached[seq] = []

    def reuse_prefix(self, seq: int, prompt: list[int]) -> int:
        """Keep the cached KV of ``seq`` that matches the start of ``prompt``; return its length."""
        if not self._prefix_reuse:
            self.forget(seq)
            return 0
        cached = self._cached[seq]
        common = 0
        for old, new in zip(cached, prompt, strict=False):
            if old != new:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # at least one token is decoded, to get fresh logits
        if common <= 0 or not llama_cpp.llama_memory_seq_rm(self._memory, seq, common, -1):
            self.forget(seq)
            return 0
        del cached[common:]
        return common

    def decode(self, entries: list[tuple[int, list[int], bool]], *, output_all: bool = False) -> list[int]:
        """One llama_decode of several sequences' tokens (at most n_batch in all), each appended at its
        sequence's next position. Returns, per entry, the batch index of its last token's output
        (-1 where none was asked for)."""
        batch = self._batch
        n = 0
        indices = []
        for seq, tokens, want_output in entries:
            start = len(self._cached[seq])
            for i, tok in enumerate(tokens):
                batch.token[n] = tok
                batch.pos[n] = start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = output_all or (want_output and i == len(tokens) - 1)
                n += 1
            indices.append(n - 1 if want_output else -1)
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            # On a fatal error llama.cpp keeps the micro-batches it did process: drop them, so each
            # sequence of this batch holds what it held before, and the other sequences are untouched.
            for seq, _, _ in entries:
                llama_cpp.llama_memory_seq_rm(self._memory, seq, len(self._cached[seq]), -1)
            raise EngineFailure(f"llama_decode failed with code {rc}")
        for seq, tokens, _ in entries:
            self._cached[seq].extend(tokens)
        return indices

    def new_sampler(self, params: SamplingParams) -> Sampler:
        """A sampler for one request (free it with free_sampler)."""
        chain = self._make_chain(params)
        if not params.grammar:
            return Sampler(chain)
        grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, params.grammar.encode(), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise InvalidRequest("invalid grammar: llama.cpp could not parse it", param="response_format")
        return Sampler(chain, grammar, self.n_vocab)

    @staticmethod
    def free_sampler(sampler: Sampler) -> None:
        sampler.free()

    def sample(self, sampler: Sampler, index: int, top_logprobs: int | None) -> GeneratedToken:
        """Sample from the logits at batch ``index``; the sampler accepts the token."""
        if sampler.grammar is None:
            token = int(llama_cpp.llama_sampler_sample(sampler.chain, self._ctx, index))
        else:
            token = sampler.sample_checked(llama_cpp.llama_get_logits_ith(self._ctx, index))
        if top_logprobs is None:
            return GeneratedToken(token)
        return self._logprobs(token, top_logprobs, index)

    def _make_chain(self, params: SamplingParams) -> ctypes.c_void_p:
        """The request's sampler chain, without its grammar (see Sampler)."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: ctypes.c_void_p | None) -> None:
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
                raise InvalidRequest("invalid sampling settings")
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        biases = dict(params.logit_bias)
        if params.ignore_eos:
            biases.update((tok, -math.inf) for tok in self._end_of_generation_tokens())
        if biases:
            bias = (llama_cpp.llama_logit_bias * len(biases))()
            for i, (tok, value) in enumerate(biases.items()):
                bias[i] = llama_cpp.llama_logit_bias(tok, value)
            add(llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(biases), bias))
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    self.n_vocab,
                    params.repeat_last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(params.temperature))
            seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
            add(llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _logprobs(self, token: int, top_n: int, index: int = -1) -> GeneratedToken:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        logsum = peak + np.log(np.exp(logits - peak).sum())
        top: tuple[tuple[int, float], ...] = ()
        if top_n > 0:
            idx = np.argpartition(-logits, top_n - 1)[:top_n]
            idx = idx[np.argsort(-logits[idx])]
            top = tuple((int(i), float(logits[i] - logsum)) for i in idx)
        return GeneratedToken(token, float(logits[token] - logsum), top)

    def _read_prompt(self, prompt: list[int]) -> int:
        """Decode ``prompt`` on sequence 0 (reusing what it shares with the cache), in n_batch chunks;
        the batch index of the last token's logits."""
        pending = prompt[self.reuse_prefix(0, prompt) :]
        index = -1
        while pending:
            chunk, pending = pending[: self.options.n_batch], pending[self.options.n_batch :]
            index = self.decode([(0, chunk, not pending)])[0]
        return index

    def smoke_test(self, prompt: list[int], max_tokens: int = 8) -> str | None:
        """Generate a few tokens greedily on sequence 0 (forgotten after) and say why the model cannot
        serve: logits that are not finite, or output that is nothing but undecodable bytes and control
        characters. None when it works (an immediate end of generation is fine)."""
        sampler = self.new_sampler(SamplingParams(temperature=0.0))
        pieces: list[bytes] = []
        try:
            index = self._read_prompt(prompt)
            for _ in range(max_tokens):
                pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
                logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
                if not np.isfinite(logits).all():
                    return "the model computes NaN or infinite logits (broken weights, or a backend bug)"
                token = self.sample(sampler, index, None).token
                if self.is_end_of_generation(token):
                    break
                pieces.append(self.piece(token))
                index = self.decode([(0, [token], True)])[0]
        finally:
            sampler.free()
            self.forget(0)
        text = b"".join(pieces).decode("utf-8", "replace")
        if pieces and not any(c.isprintable() and not c.isspace() and c != "\ufffd" for c in text):
            return f"the model writes nothing but garbage ({text[:40]!r})"
        return None

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        max_tokens: int,
        *,
        top_logprobs: int | None = None,
    ) -> Iterator[GeneratedToken]:
        """Sample up to ``max_tokens`` tokens after ``prompt`` on sequence 0, alone (benchmarks use it;
        serving goes through the batching engine). Stops after an end-of-generation token."""
        if not prompt or len(prompt) + max_tokens > self.n_ctx_per_seq:
            raise ContextOverflow(f"{len(prompt)} + {max_tokens} tokens do not fit {self.n_ctx_per_seq}")
        sampler = self.new_sampler(params)
        try:
            index = self._read_prompt(prompt)
            for _ in range(max_tokens):
                step = self.sample(sampler, index, top_logprobs)
                yield step
                if self.is_end_of_generation(step.token):
                    return
                index = self.decode([(0, [step.token], True)])[0]
        finally:
            sampler.free()

    # -- embeddings -----------------------------------------------------------------------------

    def embed(self, tokens: list[int]) -> list[float]:
        """Mean of the final hidden states over ``tokens``, L2-normalised."""
        if not tokens:
            raise InvalidRequest("cannot embed an empty input", param="input")
        if len(tokens) > self.n_ctx_per_seq:
            raise ContextOverflow(
                f"this model's context is {self.n_ctx_per_seq} tokens; the input has {len(tokens)}",
                param="input",
            )
        self.forget()
        llama_cpp.llama_set_embeddings(self._ctx, True)
        try:
            total = np.zeros(self.n_embd, dtype=np.float64)
            step = self.options.n_batch
            for offset in range(0, len(tokens), step):
                chunk = tokens[offset : offset + step]
                self.decode([(0, chunk, True)], output_all=True)
                for i in range(len(chunk)):
                    ptr = llama_cpp.llama_get_embeddings_ith(self._ctx, i)
                    total += np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
        finally:
            llama_cpp.llama_set_embeddings(self._ctx, False)
            self.forget()
        mean = total / len(tokens)
        norm = float(np.linalg.norm(mean))
        return (mean / norm if norm > 0 else mean).tolist()

    # -- scoring --------------------------------------------------------------------------------

    def score(self, tokens: list[int], first: int, step: int = 64) -> Iterator[np.ndarray[Any, Any]]:
        """The model's next-token log-probabilities at each position of ``tokens`` from ``first`` to the
        last but one, read as one sequence from an empty cache: float32 arrays of ``[rows, n_vocab]``,
        ``step`` rows at a time (llama.cpp's output buffer holds only those). Perplexity and
        quantization drift are computed from them."""
        if len(tokens) > self.n_ctx_per_seq:
            raise ContextOverflow(f"{len(tokens)} tokens do not fit this context ({self.n_ctx_per_seq})")
        step = max(1, min(step, self.options.n_batch))
        self.forget()
        try:
            for offset in range(0, first, self.options.n_batch):
                self.decode([(0, tokens[offset : min(first, offset + self.options.n_batch)], False)])
            for offset in range(first, len(tokens) - 1, step):
                part = tokens[offset : min(offset + step, len(tokens) - 1)]
                self.decode([(0, part, True)], output_all=True)
                pointer = llama_cpp.llama_get_logits(self._ctx)
                rows = np.ctypeslib.as_array(pointer, shape=(len(part), self.n_vocab)).astype(np.float32)
                rows -= rows.max(axis=1, keepdims=True)
                rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
                yield rows
        finally:
            self.forget()

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None
