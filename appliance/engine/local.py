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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.backend import (
    Capabilities,
    ChatParams,
    CompletionParams,
    Embeddings,
    has_images,
)
from appliance.engine.batching import BatchingEngine
from appliance.engine.budget import fitted_sampling, generation_budget
from appliance.engine.chat_template import ChatTemplate
from appliance.engine.draft_model import DraftModel, load_draft
from appliance.engine.faults import Faults
from appliance.engine.formats import ChatFormat, GenericFormat, detect
from appliance.engine.formats.base import Grammar
from appliance.engine.formats.reader import ReplyReader
from appliance.engine.formats.schema import prefixed
from appliance.engine.infill import infill_prompt
from appliance.engine.jobs import ExclusiveJob, GenerationJob, Job, JobStream
from appliance.engine.literals import Literals
from appliance.engine.loading import load_with_fallbacks, prepare
from appliance.engine.params import DraftSpec, LoadOptions, RequestLimits, SamplingParams
from appliance.engine.prompt_cache import PromptCache
from appliance.engine.prompts import render_chat, template_variables, tokenize_prompt
from appliance.engine.reply_grammar import client_grammar, reply_grammar, schema_grammar
from appliance.engine.rerank import rerank_prompts
from appliance.engine.tokens import check_token_ids, token_pieces, tokenize_mixed
from appliance.engine.tools import resolve_choice
from appliance.engine.worker import CUT, DRAIN, STOP, JobLoop
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


# What a model here can do: no projector is loaded for images; thinking is split out for the families
# that think (see capabilities); the middle is filled for a model with FIM tokens.
LOCAL_CAPABILITIES = Capabilities(infill=True)


def single_tokens(model: Any, texts: tuple[str, ...]) -> frozenset[int]:
    """The tokens of ``model`` that are one of ``texts`` each, whole."""
    found = set()
    for text in texts:
        tokens = model.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) == 1:
            found.add(tokens[0])
    return frozenset(found)


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
        template_file: Path | None = None,
        draft_max: int = 0,
        prompt_cache_bytes: int = 0,
        memory_room: Callable[[], int] | None = None,
        draft: DraftSpec | None = None,
    ) -> None:
        self.path = path
        self.draft_max = draft_max  # tokens guessed at most a step (appliance.engine.speculation)
        self.draft = draft  # the draft model to guess them, if any (appliance.engine.draft_model)
        self._draft_model: Any = None  # its LlamaModel once loaded
        self.prompt_cache_bytes = prompt_cache_bytes  # host memory for prefixes (engine.prompt_cache)
        self._memory_room = memory_room  # bytes the prompt cache may still take from the machine now
        self._template_file = template_file  # used instead of the GGUF's chat template
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
        self._format: ChatFormat = GenericFormat()  # how the model's family writes calls and thoughts
        self._preserved: frozenset[int] = frozenset()  # its markers' special tokens, written as text
        self._jobs: queue.Queue[Any] = queue.Queue()  # jobs, or worker.DRAIN, CUT or STOP
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
        self._jobs.put(DRAIN if drain else STOP)
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
        if self._draft_model is not None:
            self._draft_model.close()
            self._draft_model = None

    def cut(self) -> None:
        """End this model's work now, for a shutdown whose drain ran out of time: running generations
        finish at once as if they had reached max_tokens (finish_reason "length"), and waiting requests
        and new ones get ShuttingDown (503)."""
        with self._lock:
            self._cut = True
        self._jobs.put(CUT)

    def _load(self) -> None:
        started = time.monotonic()
        try:
            source = None
            if self._template_file is not None:
                try:
                    source = self._template_file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ModelLoadFailed(
                        f"cannot read chat_template_file {self._template_file}: {exc}"
                    ) from None
            model, self.options = load_with_fallbacks(self.path, self.options, self._fallbacks)
            self._template, self._control_texts = prepare(model, source)
            self._format = detect(None if self._template.is_fallback else self._template.source)
            self._preserved = single_tokens(model, self._format.markers())
            if self.draft is not None:
                # The context and KV type the model got (a fallback may have shrunk them).
                fitted = replace(self.draft.options, n_ctx=self.options.n_ctx, kv_type=self.options.kv_type)
                try:
                    self._draft_model = load_draft(model, replace(self.draft, options=fitted))
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

    def _work(self) -> None:
        self._load()
        if self._model is not None:
            self._faults = Faults.from_environment(self._model)
            cache = (
                PromptCache(self.prompt_cache_bytes, room=self._memory_room)
                if self.prompt_cache_bytes > 0
                else None
            )
            draft = (
                DraftModel(self._draft_model, self.draft.p_min) if self._draft_model and self.draft else None
            )
            self._engine = BatchingEngine(
                self._model, self._job_took, self._faults, self.draft_max, cache, draft
            )
        loop = JobLoop(self._jobs, self.model_id, left_queue=self._left_queue, job_took=self._job_took)
        loop.run(self._model, self._engine, self.error)

    def _job_took(self, seconds: float) -> None:
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds

    def _left_queue(self) -> None:
        with self._lock:
            self._waiting -= 1

    # -- introspection ------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        if self._format.thinking is not None:
            return replace(LOCAL_CAPABILITIES, reasoning=True)
        return LOCAL_CAPABILITIES

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
    def prompt_cache(self) -> tuple[int, int, int]:
        """The host-memory prompt cache: bytes held, prefixes held, and hits so far (zeros without one)."""
        engine = self._engine
        cache = engine.prompt_cache if engine is not None else None
        return (cache.size, len(cache), cache.hits) if cache is not None else (0, 0, 0)

    @property
    def speculated(self) -> dict[str, tuple[int, int]]:
        """Tokens guessed and kept so far, by source ("ngram": prompt lookup, "draft": the draft model)."""
        engine = self._engine
        return dict(engine.speculated) if engine is not None else {}

    def step_ms(self, after_change: bool = False) -> dict[str, float]:
        """What a generation step of each size (tokens decoded) has taken here, in milliseconds, as the
        engine learned it to decide whether guesses pay (appliance.engine.speculation.StepCost): after a
        step of the same size, or right after one of another size (on a GPU far longer: the engine then
        holds its guess length from step to step)."""
        engine = self._engine
        if engine is None:
            return {}
        table = engine.step_cost.changed_table() if after_change else engine.step_cost.table()
        return {str(n): round(seconds * 1000, 3) for n, seconds in table.items()}

    def payoff(self) -> dict[str, dict[str, float | bool | None]]:
        """By the number of sequences a step generates for (two or more): what a plain step takes here
        (ms), the last window of steps that might guess against plain decoding's speed, and whether
        guesses are paused (appliance.engine.payoff)."""
        engine = self._engine
        if engine is None or engine.payoff is None:
            return {}
        return {str(n): row for n, row in engine.payoff.table().items()}

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
                chat_template=self._template_origin(),
                chat_format=self._format.name,
            )
            held, prefixes, hits = self.prompt_cache
            info["prompt_cache"] = {"bytes": held, "prefixes": prefixes, "hits": hits,
                                    "limit_bytes": self.prompt_cache_bytes}  # fmt: skip
            info["speculation"] = {
                "draft_model": str(self.draft.path) if self._draft_model is not None and self.draft else None,
                **{source: {"drafted": n, "kept": k} for source, (n, k) in self.speculated.items()},
                "step_ms": self.step_ms(),
                "step_ms_after_change": self.step_ms(after_change=True),
                "payoff": self.payoff(),
            }
        if self.error:
            info["error"] = self.error
        return info

    def _template_origin(self) -> str:
        """Where the chat template comes from: a file the settings name, the GGUF, or our ChatML."""
        if self._template_file is not None:
            return "file"
        return "chatml" if self._template is not None and self._template.is_fallback else "gguf"

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
        model = self._require_generator()
        prompt, prompt_text, fmt, choice, grammar = await self._chat_prompt(model, params)
        # The template opened the thinking block: the model's first words are thoughts.
        thinking = fmt.thinking is not None and prompt_text.rstrip().endswith(fmt.thinking.open)
        if grammar and fmt.thinking and thinking and params.grammar is None and not grammar.triggers:
            close = fmt.thinking.close  # thoughts first, free; the reply's grammar holds from their end
            grammar = Grammar(prefixed(grammar.gbnf, close, then_space=True), (close,))
        if grammar is not None and grammar.triggers:
            await asyncio.to_thread(model.check_grammar, grammar.gbnf)  # built when triggered: check now
        reader = None
        if fmt.thinking is not None or choice is not None:
            reader = ReplyReader(fmt, thinking=thinking, tools=choice is not None)
        budget = params.reasoning.budget_tokens if fmt.thinking is not None else None
        end_thoughts: tuple[int, ...] = ()
        if budget is not None and fmt.thinking is not None:
            text = f"\n{fmt.thinking.close}\n\n"
            end_thoughts = tuple(model.tokenize(text, add_special=False, parse_special=True))
        return self._queue_generation(
            model,
            prompt,
            params.sampling,
            grammar,
            params.max_tokens,
            params.stop,
            params.top_logprobs,
            reader=reader,
            thinking=(budget, end_thoughts),
            context_tokens=params.context_tokens,
        )

    async def count_chat_tokens(self, params: ChatParams) -> int:
        """The tokens of the prompt ``chat(params)`` would generate after (its usage's prompt_tokens),
        rendered and tokenized the same way, without queueing anything (Anthropic's count_tokens)."""
        prompt, *_ = await self._chat_prompt(self._require_generator(), params)
        return len(prompt)

    async def _chat_prompt(
        self, model: Any, params: ChatParams
    ) -> tuple[list[int], str, ChatFormat, str | None, Grammar | None]:
        """A chat checked and rendered: its prompt's tokens and text, the family's format for it, the
        tool choice in force and the reply's grammar."""
        most = self.limits.max_messages
        if most is not None and len(params.messages) > most:
            raise InvalidRequest(
                f"the chat has {len(params.messages)} messages; this server takes at most {most} "
                "(server.max_messages)",
                param="messages",
            )
        if has_images(params.messages) and not self.capabilities.vision:
            raise InvalidRequest("images are not supported: this model reads text only", param="messages")
        choice = resolve_choice(params.tools, params.tool_choice)
        literals = Literals(self._control_texts)
        fmt = self._format.for_tools(params.tools) if choice is not None else self._format
        assert self._template is not None  # loaded with the model
        grammar = await reply_grammar(model, params, fmt, choice)
        variables = template_variables(fmt, params.reasoning, params.template_kwargs)
        # A reply constrained from its first token leaves no room for thoughts the model would open
        # itself: unless the client asked, the template is asked for none (Qwen3 writes an empty block).
        constrained = grammar is not None and not grammar.triggers and params.grammar is None
        asked = params.reasoning.enabled is not None or "enable_thinking" in params.template_kwargs
        if constrained and fmt.thinking and not asked:
            variables["enable_thinking"] = False
        prompt_text = render_chat(
            self._template, params.messages, fmt, params.tools, choice, literals, variables
        )
        prompt = await asyncio.to_thread(tokenize_prompt, model, prompt_text, literals)
        return prompt, prompt_text, fmt, choice, grammar

    async def complete(self, params: CompletionParams) -> JobStream:
        """Validate and queue a raw completion (no chat template), or a fill-in-the-middle."""
        model = self._require_generator()
        if params.infill is not None:
            infill, most = params.infill, params.max_tokens
            prompt = await asyncio.to_thread(infill_prompt, model, self.model_id, infill, most)
        elif isinstance(params.prompt, str):  # special-token texts are those tokens, as in llama-server
            text = params.prompt
            prompt = await asyncio.to_thread(model.tokenize, text, add_special=True, parse_special=True)
        else:
            prompt = list(params.prompt)
            check_token_ids(model.n_vocab, prompt, "prompt")
        grammar = None
        if params.grammar is not None:
            grammar = Grammar(await client_grammar(model, params.grammar))
        elif params.json_schema is not None:
            grammar = Grammar(schema_grammar(params.json_schema))
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
            context_tokens=params.context_tokens,
        )

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        model = self._require_generator()
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
            check_token_ids(model.n_vocab, tokens, "input")
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

    # -- llama-server's utilities and rerank ----------------------------------------------------

    async def tokenize(
        self, content: str | list[str | int], *, add_special: bool, parse_special: bool
    ) -> list[int]:
        """/tokenize: ``content`` (a text, or texts and token ids) as this model's token ids."""
        model = self._require_ready()
        return await asyncio.to_thread(
            tokenize_mixed, model, content, add_special=add_special, parse_special=parse_special
        )

    def pieces(self, tokens: list[int]) -> list[bytes]:
        """What each token writes (special ones as their text); InvalidRequest for an unknown id."""
        return token_pieces(self._require_ready(), tokens)

    async def apply_template(self, params: ChatParams) -> str:
        """/apply-template: the prompt text ``chat(params)`` would generate after, nothing queued."""
        _, prompt_text, *_ = await self._chat_prompt(self._require_generator(), params)
        return prompt_text

    async def rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """Each document's relevance score against ``query`` (a reranker's), in the documents' order, and
        the tokens read in all. InvalidRequest for a model that is not a reranker."""
        model = self._require_ready()
        prompts = await asyncio.to_thread(rerank_prompts, model, self.model_id, query, documents)

        def run(m: Any, stream: JobStream) -> None:
            scores = []
            for prompt in prompts:
                if stream.cancelled.is_set():
                    return
                scores.append(m.rank(prompt))
            stream.emit((scores, sum(map(len, prompts))))

        result: tuple[list[float], int] = await self._submit(lambda s: ExclusiveJob(s, run)).result()
        return result

    # -- helpers --------------------------------------------------------------------------------

    def _require_generator(self) -> Any:
        """The ready model, if it generates (and embeds): a reranker only scores."""
        model = self._require_ready()
        if model.reranker:
            raise InvalidRequest(
                f"model {self.model_id} is a reranker: it scores documents against a query "
                "(POST /v1/rerank) and neither generates text nor embeds",
                param="model",
            )
        return model

    def _queue_generation(
        self,
        model: Any,
        prompt: list[int],
        sampling: SamplingParams,
        grammar: Grammar | None,
        max_tokens: int | None,
        stop: tuple[str, ...],
        top_logprobs: int | None,
        *,
        reader: ReplyReader | None = None,
        thinking: tuple[int | None, tuple[int, ...]] = (None, ()),
        prefix_text: str = "",
        context_tokens: int | None = None,
    ) -> JobStream:
        max_tokens = generation_budget(
            len(prompt), max_tokens, model.n_ctx_per_seq, self.limits.max_tokens_cap, context_tokens
        )
        gbnf, triggers = (grammar.gbnf, grammar.triggers) if grammar is not None else (None, ())
        sampling = fitted_sampling(sampling, gbnf, model.n_ctx_per_seq, model.n_vocab, triggers)
        deadline_s = self.limits.request_deadline_s
        deadline = time.monotonic() + deadline_s if deadline_s else None
        preserved = self._preserved if reader is not None else frozenset()
        queued = self._submit(
            lambda stream: GenerationJob(
                stream,
                prompt,
                sampling,
                max_tokens,
                stop,
                top_logprobs,
                reader,
                preserved,
                *thinking,
                prefix_text=prefix_text,
                deadline=deadline,
            )
        )
        queued.prompt_tokens = len(prompt)
        return queued
