"""Which models are loaded, and when they load and unload.

A request names a model; one that is installed but not loaded is loaded on demand while its clients wait.
Each model is planned against the whole machine's budget, as if nothing else were loaded, so its plan does
not depend on what happens to be loaded. Loaded models then make room: the least recently used idle one
is unloaded first, and the budget is never exceeded; a load waits for busy models to finish rather than
overcommit. Models loaded on demand unload after ``model.keep_alive`` without requests; the model `serve`
started with stays until its memory is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from appliance.backend import Capabilities
from appliance.capabilities import described_capabilities, serving_capabilities
from appliance.config import PerModelSettings, Settings
from appliance.derived import DerivedModel, DerivedModels, derive, merged
from appliance.drafting import draft_spec, plan_draft
from appliance.engine.local import LOCAL_CAPABILITIES, LocalLlamaBackend, ModelState
from appliance.errors import (
    DraftModelError,
    InvalidRequest,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
    ModelTooLarge,
    ShuttingDown,
)
from appliance.hardware.memory import detect_memory
from appliance.hardware.profile import HardwareProfile
from appliance.loaded import Loaded, request_limits
from appliance.planner.model_info import read_model_info
from appliance.planner.plan import Plan, fits_budget, remaining
from appliance.planning import choose_plan, fallback_ladder, fit_label, largest_context, load_options, widened
from appliance.units import parse_duration
from models.catalog import LocalModel

log = logging.getLogger(__name__)

_REAP_INTERVAL_S = 1.0
_ROOM_POLL_S = 0.2
_EXPIRE_POLL_S = 0.02  # a model with keep-alive 0 waits this long at most between its end and its unload
FOREVER = float("inf")
"""A request's keep-alive that keeps the model until its memory is needed (Ollama's negative one)."""


class ModelManager:
    """The installed models by id, and the loaded ones among them."""

    def __init__(
        self,
        settings: Settings,
        hardware: HardwareProfile,
        models: list[LocalModel],
        *,
        default_id: str,
        plans: dict[str, Plan] | None = None,
        on_default_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.hardware = hardware  # detected before any model loaded: every plan sees the whole machine
        self._models = {m.id: m for m in models}
        self.derived = DerivedModels(settings.dirs.derived)  # served through their bases' models
        self.default_id = default_id
        self._plans: dict[Path, Plan] = {}
        self._draft_errors: dict[Path, str] = {}  # why a model's configured draft model cannot be used
        self._best: dict[str, LocalModel] = {}  # bare name -> the installed tag chosen for it
        for model_id, plan in (plans or {}).items():
            self._plans[self._models[model_id].path] = plan
        self._on_default_failed = on_default_failed
        self._loaded: dict[str, Loaded] = {}
        self._cut = False  # shutting down: no more loads, no more requests
        self._lock = asyncio.Lock()  # one load decision at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.keep_alive_s = parse_duration(settings.model.keep_alive)
        self.loads: Counter[tuple[str, str]] = Counter()  # (model, "ok" | "failed")
        self.unloads: Counter[tuple[str, str]] = Counter()  # (model, reason)
        self.fit_decisions: Counter[tuple[str, str]] = Counter()  # (model, "full" | "partial" | "no")

    # -- what exists ----------------------------------------------------------------------------

    @property
    def models(self) -> list[LocalModel]:
        return list(self._models.values())

    def __iter__(self) -> Iterator[LocalLlamaBackend]:
        """The loaded models' backends (loading and failed ones included)."""
        return iter([entry.backend for entry in self._loaded.values()])

    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def capabilities(self, model_id: str) -> Capabilities:
        """What the local model ``model_id`` can do, loaded or not: what the engine does, as far as the
        model's file declares it (appliance.capabilities)."""
        model = self._models.get(model_id)
        if model is None:
            return serving_capabilities(None, LOCAL_CAPABILITIES)
        return serving_capabilities(model.path, LOCAL_CAPABILITIES, self.template_file(model))

    def template_file(self, model: LocalModel) -> Path | None:
        """The chat template the settings give ``model`` in place of its GGUF's, if any."""
        return self.settings.per_model(model.id, model.name).chat_template_file

    def model_id(self, name: str) -> str:
        """The model id ``name`` stands for: an installed model's own id first, then an alias of a
        configured model (`[models."ID"] aliases`, read from the settings of the moment, so a reload
        changes them), then a derived model's base, else ``name`` as it is."""
        if name in self._models:
            return name
        derived = self.derived.get(name)
        return derived.base if derived is not None else self.settings.model_id_of(name)

    def is_alias(self, name: str | None) -> bool:
        """Whether ``name`` is an alias (answers then name the model as the client asked for it)."""
        return bool(name) and self.model_id(name or "") != name

    def settings_for(self, name: str | None) -> PerModelSettings:
        """The `[models."ID"]` settings of the model ``name`` stands for (empty ones when it has none); a
        derived model's own over its base's."""
        try:
            model = self.resolve(name)
        except ModelNotFound:  # a model only a remote serves may have settings too
            return self.settings.per_model(self.model_id(name or self.default_id))
        settings = self.settings.per_model(model.id, model.name)
        derived = None if name in self._models else self.derived.get(name)
        return merged(settings, derived.settings) if derived is not None else settings

    def resolve(self, name: str | None) -> LocalModel:
        """The installed model ``name`` (the default one for None; an alias: its model). A bare ``name``
        whose tags are installed (``name:q4_k_m``, ``name:q8_0``) means the one the planner likes best here.
        ModelNotFound names the installed models."""
        wanted = self.model_id(name) if name else self.default_id
        model = self._models.get(wanted)
        if model is None and ":" not in wanted:
            model = self._best.get(wanted)
            if model is None:
                tags = [m for m in self._models.values() if m.name == wanted]
                model = self._best_tag(tags) if tags else None
                if model is not None:
                    self._best[wanted] = model
        if model is None:
            installed = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"the model '{name}' does not exist (installed: {installed})", param="model")
        return model

    def _best_tag(self, tags: list[LocalModel]) -> LocalModel:
        if len(tags) == 1:
            return tags[0]
        try:
            infos = [read_model_info(m.path) for m in tags]
        except (OSError, ValueError):
            return tags[0]
        chosen = choose_plan(infos, self.hardware, self.settings)
        return next((m for m in tags if str(m.path) == chosen.model.path), tags[0])

    def add_model(self, model: LocalModel) -> None:
        """A model newly installed (pulled or imported) while the daemon runs."""
        self._models[model.id] = model
        self._plans.pop(model.path, None)
        self._best.pop(model.name, None)

    def derive(self, name: str, source: str, **fields: Any) -> DerivedModel:
        """Make the derived model ``name`` from ``source`` with ``fields`` (appliance.derived.derive)."""

        def taken(candidate: str) -> bool:
            return candidate in self._models or self.settings.model_id_of(candidate) != candidate

        return derive(self.derived, name, source, base_of=lambda n: self.resolve(n).id, taken=taken, **fields)

    def remove_derived(self, name: str) -> bool:
        """Forget the derived model ``name`` (its base stays as it is); False if there is none."""
        return name not in self._models and self.derived.remove(name)

    async def remove_model(self, name: str) -> LocalModel:
        """Forget an installed model, unloading it first; the caller deletes its files."""
        model = self.resolve(name)
        if model.id == self.default_id:
            raise InvalidRequest(f"{model.id} is the model the daemon was started with; it cannot be removed")
        entry = self._loaded.get(model.id)
        if entry is not None:
            await self._unload(entry, "request")
        self._models.pop(model.id, None)
        self._best.pop(model.name, None)
        return model

    def plan_for(self, model: LocalModel) -> Plan:
        """The planner's choice for ``model`` on this whole machine (cached; reads the GGUF header)."""
        plan = self._plans.get(model.path)
        if plan is None:
            settings = self.settings.for_model(model.id, model.name)  # its own context and slots, if any
            plan = self._with_draft(
                model, choose_plan([read_model_info(model.path)], self.hardware, settings)
            )
            self._plans[model.path] = plan
        return plan

    def _with_draft(self, model: LocalModel, plan: Plan) -> Plan:
        """``plan`` with the model's draft model beside it, where one is configured and fits; a draft that
        cannot be used is kept as the reason its model does not load (``_decide``), not raised here:
        routing and listings plan every model."""
        try:
            return plan_draft(plan, self.settings.for_model(model.id, model.name))
        except DraftModelError as exc:
            self._draft_errors[model.path] = exc.message
            return plan

    async def ensure_context(self, name: str | None, context_tokens: int | None) -> None:
        """Room for a request that wants ``context_tokens`` (Ollama's num_ctx) of ``name``'s context: when
        one slot holds less, the model is planned again with slots that large and, if that fits,
        unloaded so that its next load takes the new plan (Ollama reloads for a larger num_ctx too);
        else InvalidRequest naming the largest context that fits. Smaller ones the engine bounds."""
        if context_tokens is None:
            return
        model = self.resolve(name)
        entry = self._loaded.get(model.id)
        plan = entry.plan if entry is not None else self.plan_for(model)
        if context_tokens <= plan.settings.n_ctx // plan.settings.n_parallel:
            return
        async with self._lock:  # one load decision at a time
            settings = self.settings.for_model(model.id, model.name)
            info = await asyncio.to_thread(read_model_info, model.path)
            wider = await asyncio.to_thread(widened, info, self.hardware, settings, plan, context_tokens)
            if not wider.fits:
                most = await asyncio.to_thread(
                    largest_context, info, self.hardware, settings, plan, context_tokens
                )
                raise InvalidRequest(
                    f"num_ctx {context_tokens} does not fit: the largest context {model.id} can have here is "
                    f"{most} tokens ({wider.reasons[0]})",
                    param="num_ctx",
                )
            self._plans[model.path] = wider = await asyncio.to_thread(self._with_draft, model, wider)
            log.info("reloading %s for a context of %d tokens a slot", model.id, context_tokens)
        entry = self._loaded.get(model.id)
        if entry is not None and entry.plan is not wider:
            await self._unload(entry, "context")

    def _decide(self, model: LocalModel) -> Plan:
        """The plan a load goes by, counted by its verdict (`appliance list`'s fits). DraftModelError where
        the model's configured draft model cannot be used."""
        plan = self.plan_for(model)
        problem = self._draft_errors.get(model.path)
        if problem is not None:
            raise DraftModelError(f"model {model.id} is not loaded: {problem}")
        self.fit_decisions[(model.id, fit_label(plan))] += 1
        return plan

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """On the event loop: load the default model (unless ``model.preload`` is off) and start unloading
        idle ones."""
        self._loop = asyncio.get_running_loop()
        if self.settings.model.preload:
            default = self._models[self.default_id]
            self._spawn(default, self._decide(default), keep_alive_s=None, first=True)
        self._reaper = asyncio.create_task(self._reap())

    def reconfigure(self, settings: Settings) -> None:
        """Settings reloaded (SIGHUP): keep-alive and the request limits (queue length, deadline, messages,
        max_tokens cap) apply to new requests and loads from now on. What the plans depend on (context,
        slots, budgets) needs a restart."""
        old_keep_alive_s = self.keep_alive_s
        self.settings = settings
        self.keep_alive_s = parse_duration(settings.model.keep_alive)
        limits = request_limits(settings)
        for entry in self._loaded.values():
            # Models loaded on demand had the configured keep-alive; one set through the load API stays.
            if entry.model.id != self.default_id and entry.keep_alive_s == old_keep_alive_s:
                entry.keep_alive_s = self.keep_alive_s
            entry.backend.limits = limits

    def cut(self) -> None:
        """A shutdown's drain ran out of time: running generations end now (finish_reason "length"),
        waiting requests and new ones get ShuttingDown, and no model loads any more."""
        self._cut = True
        for entry in self._loaded.values():
            entry.backend.cut()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for entry in list(self._loaded.values()):
            entry.backend.close()
        self._loaded.clear()

    # -- requests -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(
        self, name: str | None, *, wait: bool = True, keep_alive_s: float | None = None
    ) -> AsyncIterator[LocalLlamaBackend]:
        """The ready backend of ``name``, loading it first if needed. It is not unloaded while the
        block runs (queue the request inside it). ``wait=False``: 503 at once while it loads.
        ``keep_alive_s`` (a request's, as Ollama's ``keep_alive``) becomes the model's keep-alive, counted
        from the end of its last request: 0 unloads it once idle, FOREVER keeps it until its memory is
        needed; None leaves it as it is."""
        entry = await self._acquire(self.resolve(name), wait)
        if keep_alive_s is not None:
            entry.keep_alive_s = None if keep_alive_s == FOREVER else keep_alive_s
        try:
            yield entry.backend
        finally:
            entry.leases -= 1
            entry.last_used = time.monotonic()
            if entry.keep_alive_s == 0:
                self._background(self._expire(entry))

    async def load(
        self, name: str, *, keep_alive_s: float | None = None, set_keep_alive: bool = False
    ) -> Loaded:
        """Load ``name`` (if needed) and wait until it is ready. With ``set_keep_alive``, ``keep_alive_s``
        becomes its keep-alive (None: until its memory is needed)."""
        entry = await self._acquire(self.resolve(name), wait=True)
        entry.leases -= 1
        entry.last_used = time.monotonic()
        if set_keep_alive:
            entry.keep_alive_s = keep_alive_s
        return entry

    async def unload(self, name: str) -> bool:
        """Unload ``name`` once its running requests are done; False if it was not loaded."""
        entry = self._loaded.get(self.resolve(name).id)
        if entry is None:
            return False
        await self._unload(entry, "request")
        return True

    # -- internals ------------------------------------------------------------------------------

    async def _acquire(self, model: LocalModel, wait: bool) -> Loaded:
        deadline = time.monotonic() + self.settings.model.load_timeout_s
        while True:
            if self._cut:
                raise ShuttingDown("the server is shutting down; retry once it is back")
            entry = self._loaded.get(model.id)
            if entry is None:
                if not wait:
                    self._background(self._start_load(model, deadline))
                    raise ModelLoading(f"model {model.id} is loading; retry shortly")
                entry = await self._start_load(model, deadline)
            if entry.unloading:
                await self._until(entry.closed, deadline, f"model {model.id} is being unloaded")
                continue
            if not entry.settled.is_set():
                if not wait:
                    raise ModelLoading(f"model {model.id} is loading; retry shortly")
                await self._until(entry.settled, deadline, f"model {model.id} is still loading")
            if entry.backend.state is ModelState.FAILED:
                error = entry.backend.error
                if not entry.unloading:
                    await self._unload(entry, "failed")  # a later request may try again
                raise ModelLoadFailed(f"model {model.id} failed to load: {error}")
            entry.leases += 1
            return entry

    async def _until(self, event: asyncio.Event, deadline: float, what: str) -> None:
        try:
            await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            waited = self.settings.model.load_timeout_s
            raise ModelLoading(f"{what} after {waited:g} s; retry later") from None

    async def _start_load(self, model: LocalModel, deadline: float) -> Loaded:
        async with self._lock:
            entry = self._loaded.get(model.id)
            if entry is not None:
                return entry
            try:
                plan = await asyncio.to_thread(self._decide, model)
            except (OSError, ValueError) as exc:  # GGUFError: corrupt or truncated (or gone since)
                raise ModelLoadFailed(f"model {model.id} cannot be loaded: {exc}") from None
            if not plan.fits:
                raise ModelTooLarge(f"the model {model.id} does not fit this machine: {plan.reasons[0]}")
            await self._make_room(model, plan, deadline)
            # The model serve started with stays, unless not preloaded: then it is loaded on demand too.
            stays = model.id == self.default_id and self.settings.model.preload
            return self._spawn(model, plan, keep_alive_s=None if stays else self.keep_alive_s)

    async def _make_room(self, model: LocalModel, plan: Plan, deadline: float) -> None:
        """Unload idle models, least recently used first, until ``plan`` fits beside the rest; wait for
        busy ones to finish while it does not."""
        while True:
            entries = list(self._loaded.values())  # models being unloaded still hold their memory
            if not entries or (len(entries) < self.settings.model.max_loaded and self._room(plan, entries)):
                return
            idle = [e for e in entries if not e.unloading and e.idle]
            if idle:
                victim = min(idle, key=lambda e: e.last_used)
                log.info("unloading %s to make room for %s", victim.model.id, model.id)
                await self._unload(victim, "memory")
                continue
            if time.monotonic() > deadline:
                busy = ", ".join(e.model.id for e in entries)
                raise ModelLoading(
                    f"not enough memory to load {model.id} while {busy} serve requests; retry later"
                )
            await asyncio.sleep(_ROOM_POLL_S)

    @staticmethod
    def _room(plan: Plan, entries: list[Loaded]) -> bool:
        left = remaining(plan.budget, [e.plan.memory for e in entries])
        return fits_budget(plan.memory, left, plan.settings.unified_memory)

    def _spawn(
        self, model: LocalModel, plan: Plan, *, keep_alive_s: float | None, first: bool = False
    ) -> Loaded:
        loop = self._loop
        assert loop is not None, "start() first"
        settled = asyncio.Event()

        def on_settled(backend: LocalLlamaBackend) -> None:  # on the worker thread
            ok = backend.state is ModelState.READY
            self.loads[(model.id, "ok" if ok else "failed")] += 1
            if first and not ok and self._on_default_failed is not None:
                self._on_default_failed(backend.error or "load failed")
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(settled.set)

        options = load_options(plan, self.hardware, self.settings.model)
        own = self.settings.per_model(model.id, model.name)
        backend = LocalLlamaBackend(
            model.path,
            model.id,
            options,
            limits=request_limits(self.settings),
            on_settled=on_settled,
            fallbacks=fallback_ladder(options, plan.model),
            template_file=own.chat_template_file,
            draft_max=self.settings.model.draft_max if own.draft_max is None else own.draft_max,
            draft=draft_spec(plan, options, self.settings.model.draft_p_min),
            prompt_cache_bytes=self.settings.model.prompt_cache_bytes(self.hardware.memory.total_bytes),
            memory_room=self._memory_room,
        )
        entry = Loaded(model, backend, plan, keep_alive_s, settled)
        self._loaded[model.id] = entry
        log.info("loading %s from %s", model.id, model.path)
        backend.start()
        return entry

    def _memory_room(self) -> int:
        """Memory the prompt caches may still take: what is available now (within a container's limit)
        less a floor kept for everything else (1 GiB, an eighth of RAM on smaller machines)."""
        floor = min(1 << 30, self.hardware.memory.total_bytes // 8)
        return detect_memory().available_bytes - floor

    async def _unload(self, entry: Loaded, reason: str) -> None:
        if entry.unloading:
            await entry.closed.wait()
            return
        entry.unloading = True
        try:
            await asyncio.to_thread(entry.backend.close, drain=True)
        finally:
            if self._loaded.get(entry.model.id) is entry:
                del self._loaded[entry.model.id]
            entry.closed.set()
            self.unloads[(entry.model.id, reason)] += 1
            log.info("unloaded %s (%s)", entry.model.id, reason, extra={"model": entry.model.id})

    async def _expire(self, entry: Loaded) -> None:
        """Unload ``entry`` as soon as it is idle, if its keep-alive is still 0 then (keep_alive 0: Ollama
        unloads a model once the request that said so is done, not a reaper's second later)."""
        while entry.keep_alive_s == 0 and not entry.unloading and self._loaded.get(entry.model.id) is entry:
            if entry.idle and entry.settled.is_set():
                await self._unload(entry, "idle")
                return
            await asyncio.sleep(_EXPIRE_POLL_S)

    async def _reap(self) -> None:
        """Unload models idle for longer than their keep-alive."""
        while True:
            await asyncio.sleep(_REAP_INTERVAL_S)
            now = time.monotonic()
            for entry in list(self._loaded.values()):
                keep = entry.keep_alive_s
                if (
                    keep is not None
                    and not entry.unloading
                    and entry.settled.is_set()
                    and entry.idle
                    and entry.idle_seconds(now) >= keep
                ):
                    self._background(self._unload(entry, "idle"))

    def _background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("background model task failed: %s", t.exception())

        task.add_done_callback(done)

    # -- reporting ------------------------------------------------------------------------------

    def health(self) -> tuple[str, int]:
        """("ok" | "loading" | "error", HTTP status) from the default model's state."""
        entry = self._loaded.get(self.default_id)
        if entry is not None and entry.backend.state is ModelState.LOADING:
            return "loading", 503
        if entry is not None and entry.backend.state is ModelState.FAILED:
            return "error", 503
        return "ok", 200

    def describe_loaded(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [entry.describe(now) for entry in self._loaded.values()]

    def describe_installed(self) -> list[dict[str, Any]]:
        """Every installed model, loaded or not, with the plan it would be loaded with; then the derived
        models (with their bases')."""
        installed = [self.describe_model(model) for model in self._models.values()]
        bases = {model.id: model for model in self._models.values()}
        return installed + [
            self.describe_model(bases[d.base], d.name) for d in self.derived if d.base in bases
        ]

    def describe_model(self, model: LocalModel, name: str | None = None) -> dict[str, Any]:
        """``model`` as /v1/models shows it; as the derived model ``name`` when that is one of its."""
        entry = self._loaded.get(model.id)
        derived = self.derived.get(name) if name and name not in self._models else None
        if derived is not None:
            return {**self.describe_model(model), "id": derived.name, "derived_from": derived.base,
                    "default": False, "aliases": []}  # fmt: skip
        info: dict[str, Any] = {
            "id": model.id,
            "path": str(model.path),
            "source": model.source,
            "default": model.id == self.default_id,
            "aliases": self.settings_for(model.id).aliases,
            "loaded": entry is not None and entry.backend.state is ModelState.READY,
            "state": "unloaded" if entry is None else entry.state,
        }
        try:
            info["size_bytes"] = model.path.stat().st_size
            info["plan"] = self.plan_for(model).to_json()
            if model.path in self._draft_errors:
                info["error"] = self._draft_errors[model.path]
            data = self.settings.dirs.data
            info.update(described_capabilities(model.path, data, self.template_file(model)))
        except (OSError, ValueError) as exc:
            info["error"] = str(exc)
        return info
