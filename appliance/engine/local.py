"""The local backend: one llama.cpp model driven by one worker thread, fed by a bounded FIFO queue.

Requests never interrupt each other: each waits its turn (up to ``max_queue`` may wait) and runs to its
end, or until its client goes away, which stops it within one token. The event loop never blocks on
llama.cpp: the worker hands events back through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.backend import (
    Capabilities,
    ChatParams,
    CompletionParams,
    Embeddings,
)
from appliance.engine import tools as toolfmt
from appliance.engine.batching import BatchingEngine, failure
from appliance.engine.chat_template import ChatTemplate, TemplateError
from appliance.engine.faults import Faults
from appliance.engine.jobs import DONE, ExclusiveJob, GenerationJob, Job, JobStream
from appliance.engine.literals import Literals, trie_pattern
from appliance.engine.params import LoadOptions, RequestLimits, SamplingParams
from appliance.errors import (
    ApplianceError,
    ContextOverflow,
    InvalidRequest,
    ModelLoadFailed,
    ModelLoading,
    QueueFull,
    ShuttingDown,
)

log = logging.getLogger(__name__)

_DRAIN = object()  # close() with drain: stop once the submitted requests are done
_CUT = object()  # cut(): end the running generations now and refuse the waiting requests


class ModelState(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class LocalLlamaBackend:
    """Serves one GGUF model through llama.cpp, one request at a time, in arrival order."""

    def __init__(
        self,
        path: Path,
        model_id: str,
        options: LoadOptions,
        *,
        limits: RequestLimits | None = None,
        on_settled: Callable[[LocalLlamaBackend], None] | None = None,
        fallbacks: list[LoadOptions] | None = None,
    ) -> None:
        self.path = path
        self.model_id = model_id
        self.options = options
        # Tried in order when a load fails (for memory, usually): see appliance.planning.fallback_ladder.
        self._fallbacks = fallbacks or []
        self.limits = limits or RequestLimits()  # replaced as a whole when the settings are reloaded
        self.state = ModelState.LOADING
        self.error: str | None = None
        self._model: Any = None  # appliance.engine.llama.LlamaModel once loaded
        self._template: ChatTemplate | None = None
        self._control_texts: re.Pattern[str] | None = None  # control tokens' texts, to keep out of messages
        self._jobs: queue.Queue[Any] = queue.Queue()  # jobs, _DRAIN or None (stop)
        self._engine: BatchingEngine | None = None
        self._faults: Faults | None = None  # injected faults, for tests (appliance.engine.faults)
        self._lock = threading.Lock()
        self._waiting = 0
        self._in_flight = 0  # submitted and not yet done: waiting, running, or being cancelled
        self.idle_since = time.monotonic()
        self._closing = False
        self._cut = False  # the daemon is shutting down and its drain ran out: no new work
        self._job_seconds = 1.0  # moving average, for Retry-After
        self._worker = threading.Thread(target=self._work, name="llama-worker", daemon=True)
        self.load_seconds: float | None = None
        self._on_settled = on_settled  # called from the worker once the load succeeded or failed

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start loading in the worker thread; requests get 503 until it is ready."""
        self._worker.start()

    def close(self, *, drain: bool = False) -> None:
        """Stop the worker and free the model. With ``drain``, requests already submitted finish
        first; without, waiting ones get 503 and running ones stop. New requests get 503 at once."""
        with self._lock:
            self._closing = True
        self._jobs.put(_DRAIN if drain else None)
        if self._worker.is_alive():
            self._worker.join(timeout=None if drain else 30)
        if self._worker.is_alive():
            # Still inside llama.cpp (a long load or decode): freeing the model under it would crash
            # the process; it is freed when the process exits.
            log.warning("model %s: the worker did not stop; its memory is freed at exit", self.model_id)
            return
        if self._model is not None:
            self._model.close()
            self._model = None

    def cut(self) -> None:
        """End this model's work now, for a shutdown whose drain ran out of time: running generations
        finish at once as if they had reached max_tokens (finish_reason "length"), and waiting requests
        and new ones get ShuttingDown (503)."""
        with self._lock:
            self._cut = True
        self._jobs.put(_CUT)

    def _load(self) -> None:
        from appliance.engine.llama import LlamaModel  # the only place llama.cpp is loaded

        started = time.monotonic()
        try:
            model = self._load_with_fallbacks(LlamaModel)
            try:
                self._template = ChatTemplate(
                    model.chat_template,
                    bos_token=model.token_text(model.bos_token),
                    eos_token=model.token_text(model.eos_token),
                )
                self._control_texts = trie_pattern(model.control_texts())
                self._smoke_test(model)
            except BaseException:
                model.close()
                raise
        except (ApplianceError, ValueError) as exc:
            self.error = getattr(exc, "message", str(exc))
            self.state = ModelState.FAILED
            log.error("model %s failed to load: %s", self.model_id, self.error)
        else:
            self._model = model
            self.load_seconds = time.monotonic() - started
            self.state = ModelState.READY
            log.info(
                "model %s ready in %.1f s (n_ctx %d)",
                self.model_id,
                self.load_seconds,
                model.n_ctx,
                extra={"model": self.model_id, "n_ctx": model.n_ctx},
            )
        if self._on_settled is not None:
            self._on_settled(self)

    def _smoke_test(self, model: Any) -> None:
        """A short fixed chat at temperature 0 must produce tokens through the model's chat template
        before the model is marked ready; a model that cannot is reported instead of being served."""
        assert self._template is not None
        try:
            text = self._template.render([{"role": "user", "content": "Say hello."}])
        except TemplateError as exc:
            raise ModelLoadFailed(f"its chat template fails: {exc.message}") from None
        problem = model.smoke_test(self._tokenize_prompt(model, text))
        if problem:
            raise ModelLoadFailed(f"smoke test failed: {problem}")

    def _load_with_fallbacks(self, loader: Callable[[Path, LoadOptions], Any]) -> Any:
        attempts = [self.options, *(o for o in self._fallbacks if o != self.options)]
        for index, options in enumerate(attempts):
            try:
                model = loader(self.path, options)
            except ModelLoadFailed as exc:
                if index + 1 == len(attempts):
                    raise
                following = attempts[index + 1]
                log.warning(
                    "load failed (%s); retrying with context %s, KV %s, %s GPU layers",
                    exc.message,
                    following.n_ctx,
                    following.kv_type,
                    following.n_gpu_layers,
                )
                continue
            self.options = options
            return model
        raise ModelLoadFailed(f"cannot load {self.path}")

    def _work(self) -> None:
        self._load()
        model = self._model
        engine = None
        if model is not None:
            self._faults = Faults.from_environment(model)
            engine = BatchingEngine(model, self._request_done, self._faults)
        self._engine = engine
        pending: deque[Job] = deque()  # arrived, not yet admitted, in arrival order
        draining = cut = False
        while True:
            idle = engine is None or (engine.active == 0 and not pending)
            if draining and idle:
                self._shutdown(engine, pending)
                return
            try:
                job = self._jobs.get() if idle else self._jobs.get_nowait()
                while True:
                    if job is None:
                        self._shutdown(engine, pending)
                        return
                    if job is _DRAIN:
                        draining = True
                    elif job is _CUT:
                        cut = True
                    else:
                        pending.append(job)
                    job = self._jobs.get_nowait()
            except queue.Empty:
                pass
            if cut:
                cut = False
                self._cut_short(engine, pending)
            if engine is None:  # the model failed to load: nothing will run
                for job in pending:
                    job.stream.emit(ModelLoadFailed(f"model {self.model_id} failed to load: {self.error}"))
                    job.stream.emit(DONE)
                pending.clear()
                continue
            try:
                self._admit(engine, pending)
                if engine.active:
                    engine.step()
            except Exception as exc:  # a bug no one request is to blame for: fail those running, go on
                engine.fail_all(failure("an engine step", exc))

    def _admit(self, engine: BatchingEngine, pending: deque[Job]) -> None:
        """Start waiting jobs in arrival order while slots are free. An exclusive job (embeddings)
        waits for the running generations to end, and later jobs wait behind it."""
        while pending:
            job = pending[0]
            if job.stream.cancelled.is_set():
                pending.popleft()
                self._left_queue()
                job.stream.emit(DONE)
                continue
            if isinstance(job, ExclusiveJob):
                if engine.active:
                    return
                pending.popleft()
                self._left_queue()
                self._run_exclusive(job)
                continue
            if not engine.has_free_slot():
                return
            pending.popleft()
            self._left_queue()
            engine.start(job)

    def _run_exclusive(self, job: ExclusiveJob) -> None:
        started = time.monotonic()
        try:
            job.run(self._model, job.stream)
        except Exception as exc:  # a bad input, a bug or a llama.cpp failure: report it, keep serving
            job.stream.emit(failure("the request", exc))
        finally:
            job.stream.emit(DONE)
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.monotonic() - started)

    def _request_done(self, seconds: float) -> None:
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds

    def _left_queue(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _cut_short(self, engine: BatchingEngine | None, pending: deque[Job]) -> None:
        for job in pending:
            self._left_queue()
            job.stream.emit(ShuttingDown("the server is shutting down; retry once it is back"))
            job.stream.emit(DONE)
        pending.clear()
        if engine is not None:
            engine.finish_all()

    def _shutdown(self, engine: BatchingEngine | None, pending: deque[Job]) -> None:
        for job in pending:
            job.stream.emit(ModelLoading(f"model {self.model_id} is shutting down"))
            job.stream.emit(DONE)
        if engine is not None:
            for slot in engine.slots:
                if slot.job is not None:
                    slot.release(engine.model)

    # -- introspection ------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return self._waiting

    @property
    def busy(self) -> bool:
        return self.slots_busy > 0

    @property
    def idle(self) -> bool:
        """No request is waiting, running or finishing."""
        with self._lock:
            return self._in_flight == 0

    @property
    def predicted_wait_s(self) -> float:
        """Roughly how long a request arriving now would wait for a slot."""
        with self._lock:
            waiting = self._waiting
        if waiting == 0 and self.slots_busy < self.slots_total:
            return 0.0
        return self._job_seconds * (waiting + 1) / max(self.slots_total, 1)

    @property
    def kv_cache_usage(self) -> float:
        """Share of the KV cache's cells holding tokens (kept prefixes included), 0 to 1."""
        model = self._model
        return model.kv_cells_used / model.n_ctx if model is not None and model.n_ctx else 0.0

    @property
    def slots_busy(self) -> int:
        engine = self._engine
        return engine.active if engine is not None else 0

    @property
    def slots_total(self) -> int:
        return self.options.n_seq_max

    def describe(self) -> dict[str, Any]:
        """What is loaded, for logs and status."""
        model = self._model
        info: dict[str, Any] = {
            "id": self.model_id,
            "path": str(self.path),
            "state": self.state.value,
            "busy": self.busy,
            "slots_busy": self.slots_busy,
            "slots_total": self.slots_total,
            "queue_depth": self.queue_depth,
        }
        if model is not None:
            info.update(
                n_ctx=model.n_ctx,
                n_ctx_per_slot=model.n_ctx_per_seq,
                n_ctx_train=model.n_ctx_train,
                architecture=model.metadata.get("general.architecture"),
                chat_template="gguf" if not self._template or not self._template.is_fallback else "chatml",
            )
        if self.error:
            info["error"] = self.error
        return info

    def _require_ready(self) -> Any:
        if self.state is ModelState.LOADING:
            raise ModelLoading(f"model {self.model_id} is still loading")
        if self.state is ModelState.FAILED:
            raise ModelLoadFailed(f"model {self.model_id} failed to load: {self.error}")
        return self._model

    # -- queueing -------------------------------------------------------------------------------

    def _job_done(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.idle_since = time.monotonic()

    def _submit(self, make: Callable[[JobStream], Job]) -> JobStream:
        stream = JobStream(asyncio.get_running_loop(), on_done=self._job_done)
        with self._lock:
            if self._cut:
                raise ShuttingDown("the server is shutting down; retry once it is back")
            if self._closing:
                raise ModelLoading(f"model {self.model_id} is being unloaded; retry")
            if self._waiting >= self.limits.max_queue:
                retry = max(1, round(self._job_seconds * (self._waiting + 1) / self.slots_total))
                raise QueueFull(
                    f"{self._waiting} requests are already waiting for {self.model_id}; retry later",
                    retry_after_s=retry,
                )
            self._waiting += 1
            self._in_flight += 1
            self._jobs.put(make(stream))
        return stream

    # -- requests -------------------------------------------------------------------------------

    async def chat(self, params: ChatParams) -> JobStream:
        """Validate and queue a chat; the returned stream yields TextDelta then Finished."""
        model = self._require_ready()
        most = self.limits.max_messages
        if most is not None and len(params.messages) > most:
            raise InvalidRequest(
                f"the chat has {len(params.messages)} messages; this server takes at most {most} "
                "(server.max_messages)",
                param="messages",
            )
        choice = toolfmt.resolve_choice(params.tools, params.tool_choice)
        literals = Literals(self._control_texts)
        prompt_text = self._render_chat(params, choice, literals)
        prompt = await asyncio.to_thread(self._tokenize_prompt, model, prompt_text, literals)
        grammar = None
        if choice is not None:
            grammar = self._grammar(
                toolfmt.reply_schema(params.tools, choice, parallel=params.parallel_tool_calls)
            )
        elif params.json_schema is not None:
            grammar = self._grammar(params.json_schema)
        return self._queue_generation(
            model,
            prompt,
            params.sampling,
            grammar,
            params.max_tokens,
            params.stop,
            params.top_logprobs,
            tool_mode=choice is not None,
        )

    async def complete(self, params: CompletionParams) -> JobStream:
        """Validate and queue a raw completion (no chat template)."""
        model = self._require_ready()
        if isinstance(params.prompt, str):
            prompt = await asyncio.to_thread(
                model.tokenize, params.prompt, add_special=True, parse_special=False
            )
        else:
            prompt = list(params.prompt)
            if any(t < 0 or t >= model.n_vocab for t in prompt):
                raise InvalidRequest("prompt contains token ids outside the vocabulary", param="prompt")
        grammar = self._grammar(params.json_schema) if params.json_schema is not None else None
        echo = b"".join(model.piece(t) for t in prompt).decode("utf-8", "replace") if params.echo else ""
        return self._queue_generation(
            model,
            prompt,
            params.sampling,
            grammar,
            params.max_tokens,
            params.stop,
            params.top_logprobs,
            prefix_text=echo,
        )

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        model = self._require_ready()
        token_lists: list[list[int]] = []
        for item in inputs:
            if isinstance(item, str):
                token_lists.append(
                    await asyncio.to_thread(model.tokenize, item, add_special=True, parse_special=False)
                )
            else:
                token_lists.append(list(item))
        for tokens in token_lists:
            if not tokens:
                raise InvalidRequest("an input is empty", param="input")
            if any(t < 0 or t >= model.n_vocab for t in tokens):
                raise InvalidRequest("input contains token ids outside the vocabulary", param="input")
            if len(tokens) > model.n_ctx_per_seq:
                raise ContextOverflow(
                    f"an input has {len(tokens)} tokens; this model's context is {model.n_ctx_per_seq}",
                    param="input",
                )

        def run(m: Any, stream: JobStream) -> None:
            vectors = []
            for tokens in token_lists:
                if stream.cancelled.is_set():
                    return
                if self._faults is not None:
                    self._faults.check_embed(tokens)
                vectors.append(m.embed(tokens))
            stream.emit(Embeddings(vectors, sum(len(t) for t in token_lists)))

        result: Embeddings = await self._submit(lambda stream: ExclusiveJob(stream, run)).result()
        return result

    # -- helpers --------------------------------------------------------------------------------

    def _render_chat(self, params: ChatParams, choice: str | None, literals: Literals) -> str:
        """The chat as the model's template renders it, every message's text protected by ``literals``."""
        assert self._template is not None
        messages = [dict(m) for m in params.messages]
        for message in messages:
            if message.get("role") == "assistant" and message.get("tool_calls"):
                message["content"] = toolfmt.history_content(
                    message.pop("tool_calls"), message.get("content")
                )
        if choice is not None:
            instructions = toolfmt.system_instructions(params.tools, choice)
            if messages and messages[0].get("role") == "system":
                messages[0]["content"] = f"{messages[0].get('content') or ''}\n\n{instructions}".strip()
            else:
                messages.insert(0, {"role": "system", "content": instructions})
        for message in messages:
            if isinstance(message.get("content"), str):
                message["content"] = literals.protect(message["content"])
        try:
            return self._template.render(messages)
        except TemplateError:
            if not any(m.get("role") == "tool" for m in messages):
                raise
        # Some templates know no "tool" role: hand results back as user turns instead.
        for message in messages:
            if message.get("role") == "tool":
                message["role"] = "user"
                message["content"] = (
                    f"Tool result ({message.get('tool_call_id', '')}): {message.get('content')}"
                )
        return self._template.render(messages)

    @staticmethod
    def _tokenize_prompt(model: Any, text: str, literals: Literals | None = None) -> list[int]:
        bos_text = model.token_text(model.bos_token)
        # The template may already start with BOS; adding another would change the model's output.
        add_bos = model.add_bos and not (bos_text and text.startswith(bos_text))
        pieces = literals.segments(text) if literals is not None else [(text, True)]
        tokens: list[int] = []
        for index, (piece, parse_special) in enumerate(pieces):
            tokens += model.tokenize(piece, add_special=add_bos and index == 0, parse_special=parse_special)
        return tokens

    @staticmethod
    def _grammar(schema: dict[str, Any]) -> str:
        from appliance.engine.grammar import json_schema_grammar

        return json_schema_grammar(schema)

    def _queue_generation(
        self,
        model: Any,
        prompt: list[int],
        sampling: SamplingParams,
        grammar: str | None,
        max_tokens: int | None,
        stop: tuple[str, ...],
        top_logprobs: int | None,
        *,
        tool_mode: bool = False,
        prefix_text: str = "",
    ) -> JobStream:
        n_ctx = model.n_ctx_per_seq
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        cap = self.limits.max_tokens_cap
        if max_tokens is not None and cap is not None and max_tokens > cap:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}; this server generates at most {cap} tokens a request "
                "(server.max_tokens_cap)",
                param="max_tokens",
            )
        if max_tokens is None:
            if len(prompt) >= n_ctx:
                raise ContextOverflow(
                    f"this model's maximum context length is {n_ctx} tokens; the prompt has {len(prompt)} "
                    "tokens, which leaves none to generate",
                    param="messages",
                )
            max_tokens = min(n_ctx - len(prompt), cap or n_ctx)
        if max_tokens < 1 or len(prompt) + max_tokens > n_ctx:
            raise ContextOverflow(
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {len(prompt)} tokens "
                f"and {max_tokens} more were requested ({len(prompt) + max_tokens} in all)",
                param="messages",
            )
        if any(token < 0 or token >= model.n_vocab for token in sampling.logit_bias):
            # ctypes would cut such an id to 32 bits and bias whatever token that names
            raise InvalidRequest("logit_bias names a token outside the vocabulary", param="logit_bias")
        changes: dict[str, Any] = {}
        if grammar is not None:
            changes["grammar"] = grammar
        if not 0 <= sampling.repeat_last_n <= n_ctx:
            # -1 means the whole context (as Ollama says); more than that only sizes llama.cpp's window
            # (2**31 of it was seconds of allocation per request)
            changes["repeat_last_n"] = n_ctx
        if changes:
            sampling = SamplingParams(**{**sampling.__dict__, **changes})
        deadline_s = self.limits.request_deadline_s
        deadline = time.monotonic() + deadline_s if deadline_s else None
        return self._submit(
            lambda stream: GenerationJob(
                stream, prompt, sampling, max_tokens, stop, top_logprobs, tool_mode, prefix_text, deadline
            )
        )
