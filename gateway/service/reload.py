"""Hot reload: a new configuration generation from the sources the gateway started from.

New requests are decided under the new generation; a request in flight keeps the one it
started with (RequestContext.config). An invalid file changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.config.generation import Config
from gateway.config.schema import Settings, SettingsError
from gateway.service.state import METRICS, RUNTIME, SETTINGS

log = logging.getLogger("ims_gateway.reload")

# Bound at start-up (listeners, the upstream session and its pool, logging handlers):
# a changed value is reported as needing a restart and the running one is kept.
RESTART_ONLY = ("server", "upstream", "logging")
# Keys of reloadable sections bound at start-up all the same: the report's store and its name in it.
RESTART_ONLY_KEYS = (("report", "store"), ("report", "replica"))


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did; ``result`` (applied, refused) is a bounded metrics label."""

    result: str
    generation: int
    restart_required: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def document(self) -> dict[str, object]:
        document: dict[str, object] = {"result": self.result, "generation": self.generation}
        if self.result == "applied":
            document["restart_required"] = list(self.restart_required)
        else:
            document["problems"] = list(self.problems)
        return document


def restart_required(running: Settings, loaded: Settings) -> tuple[str, ...]:
    """``section.key`` of every restart-only setting that differs."""
    changed = []
    for section in RESTART_ONLY:
        before, after = getattr(running, section), getattr(loaded, section)
        changed += [f"{section}.{f.name}" for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(after, f.name)]
    for section, key in RESTART_ONLY_KEYS:
        if getattr(getattr(running, section), key) != getattr(getattr(loaded, section), key):
            changed.append(f"{section}.{key}")
    return tuple(changed)


def keep_restart_only(started: Settings, loaded: Settings) -> Settings:
    """``loaded`` with every restart-only setting as the gateway started with it."""
    kept = dataclasses.replace(loaded, **{section: getattr(started, section) for section in RESTART_ONLY})
    for section, key in RESTART_ONLY_KEYS:
        table = dataclasses.replace(getattr(kept, section), **{key: getattr(getattr(started, section), key)})
        kept = dataclasses.replace(kept, **{section: table})
    return kept


def reload(gateway: web.Application) -> Reloaded:
    """Re-read the configuration and swap it in whole, or keep the running one and say why."""
    reloaded = _reload(gateway)
    metrics = gateway[METRICS]
    metrics.config_reloaded(reloaded.result == "applied")
    if reloaded.result == "applied":
        metrics.configured(gateway[RUNTIME].config.settings)
    return reloaded


def _reload(gateway: web.Application) -> Reloaded:
    runtime = gateway[RUNTIME]
    running = runtime.config
    if runtime.load is None:
        return _refused(running, ["this gateway was started without a configuration source to re-read"])
    try:
        loaded = runtime.load()
    except SettingsError as exc:
        return _refused(running, [f"{exc.source}: {p}" if exc.source else p for p in exc.problems])
    started = gateway[SETTINGS]
    changed = restart_required(started, loaded)
    kept = keep_restart_only(started, loaded)
    runtime.config = Config.from_settings(kept, generation=running.generation + 1)
    if changed:
        log.warning("config reload: these settings take effect only after a restart, kept as running: %s", ", ".join(changed))
    log.info("config reloaded: generation %d", runtime.config.generation)
    return Reloaded("applied", runtime.config.generation, restart_required=changed)


def _refused(running: Config, problems: list[str]) -> Reloaded:
    log.error("config reload refused, generation %d stays:\n%s", running.generation, "\n".join(f"  - {p}" for p in problems))
    return Reloaded("refused", running.generation, problems=tuple(problems))


def endpoint(gateway: web.Application) -> Callable[[web.Request], Awaitable[web.Response]]:
    """POST /reload on the admin listener: 200 when applied, 400 with the problems when refused."""

    async def reload_view(request: web.Request) -> web.Response:
        reloaded = reload(gateway)
        return web.json_response(reloaded.document(), status=200 if reloaded.result == "applied" else 400)

    return reload_view
