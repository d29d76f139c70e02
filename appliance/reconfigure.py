"""What a configuration reload (SIGHUP) may change in a running daemon, and what needs a restart.

Settings the daemon reads per request or per load (routing, remotes, queue, deadlines, keep-alive, keys,
hosts, origins, limits, log level) change live. Those its listening socket or its loaded models were built
from cannot: a reload keeps their running values and says they take effect after a restart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from appliance.config import PerModelSettings, Settings

RESTART_ONLY = (
    "server.host",
    "server.port",
    "model.default",
    "model.alias",
    "model.n_ctx",
    "model.n_parallel",
    "model.n_threads",
    "model.n_batch",
    "model.n_ubatch",
    "model.n_gpu_layers",
    "model.gpus",
    "model.flash_attn",
    "planner",  # the plans of the models the daemon knows are made once
    "store.discover",  # the installed models are listed at start
    "home",  # the daemon holds the lock of its state directory, and its store is the one there
)
"""Dotted setting names (or whole sections) that a running daemon keeps until it restarts."""


@dataclass(frozen=True)
class Reconciled:
    """The settings to run with after a reload, and what changed."""

    settings: Settings
    applied: list[str]  # changed, in effect now
    need_restart: list[str]  # changed in the file, environment or flags; the old value stays until a restart


def reconcile(running: Settings, loaded: Settings) -> Reconciled:
    """``loaded`` (the configuration read again) with the restart-only settings kept at their ``running``
    values, and the names of what changed: each setting as a dotted name, remotes by name."""
    before, after = _flatten(running), _flatten(loaded)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    settings = loaded.model_copy(deep=True)
    applied: list[str] = []
    need_restart: list[str] = []
    for name in changed:
        restart = next((r for r in RESTART_ONLY if name == r or name.startswith(r + ".")), None)
        if restart is None:
            applied.append(_remotes_change(running, loaded) if name == "remotes" else name)
            continue
        need_restart.append(name)
        _assign(settings, restart, _lookup(running, restart))
    need_restart += _models_restart(running, settings)
    if "models" in applied and _set(settings.models) == _set(running.models):
        applied.remove("models")  # only what waits for a restart changed
    return Reconciled(settings, applied, need_restart)


def _models_restart(running: Settings, settings: Settings) -> list[str]:
    """The per-model plan settings (`[models."ID"]` n_ctx, n_parallel) changed in ``settings``, put back
    to their running values: a model's plan is made once (its aliases, sampling and system prompt change
    live)."""
    changed: list[str] = []
    for model_id, per_model in settings.models.items():
        old = running.models.get(model_id)
        for key in ("n_ctx", "n_parallel"):
            kept = getattr(old, key) if old is not None else None
            if getattr(per_model, key) != kept:
                changed.append(f'models."{model_id}".{key}')
                setattr(per_model, key, kept)
    for model_id in running.models.keys() - settings.models.keys():
        old = running.models[model_id]
        if old.n_ctx is not None or old.n_parallel is not None:
            changed.append(f'models."{model_id}" (its context and slots)')
            settings.models[model_id] = PerModelSettings(n_ctx=old.n_ctx, n_parallel=old.n_parallel)
    return changed


def _set(models: dict[str, PerModelSettings]) -> dict[str, PerModelSettings]:
    return {model_id: per_model for model_id, per_model in models.items() if per_model != PerModelSettings()}


def _flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Every setting by dotted name; lists (remotes, keys) and dicts of plain values are one setting each.
    Values stay Python objects, so a changed secret (SecretStr compares by value) counts as changed."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _lookup(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _assign(settings: Settings, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target: Any = settings
    for part in parents:
        target = getattr(target, part)
    setattr(target, last, copy.deepcopy(value))


def _remotes_change(running: Settings, loaded: Settings) -> str:
    """The change of the remotes in a few words: "remotes (added a; removed b; changed c)"."""
    old = {r.name: r for r in running.remotes}
    new = {r.name: r for r in loaded.remotes}
    parts = [
        f"{what} {', '.join(names)}"
        for what, names in (
            ("added", [n for n in new if n not in old]),
            ("removed", [n for n in old if n not in new]),
            ("changed", [n for n in new if n in old and new[n] != old[n]]),
        )
        if names
    ]
    return f"remotes ({'; '.join(parts) or 'reordered'})"
