"""Hot reload: POST /reload on the admin listener and SIGHUP re-read the configuration."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import config
from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from gateway.service.state import METRICS, RUNTIME
from testing.paths import REPO
from tests.conftest import Gateway, GatewayFactory, Recorder, Seen

PATH = "/v2/images/33ad552d-1149-471c-8190-ff6776174a00"
V20_NAME = b'[{"replace": "/name", "value": "x"}]'
FORBIDDEN = b'[{"op": "replace", "path": "/__os_type", "value": "Windows"}]'
OBSERVE = '[patch]\nmode = "observe"\n[deprecation]\nv20_deprecated_at = "2024-01-01T00:00:00Z"\n'
ENFORCE = '[deprecation]\nv20_deprecated_at = "2023-06-30T23:59:59Z"\n'
INVALID = '[deprecation]\nv20_deprecated_at = "2024-06-30T23:59:59Z"\nv20_sunset_at = "2024-01-01T00:00:00Z"\n'


class Reloadable:
    """A gateway whose configuration file the test rewrites, then reloads."""

    def __init__(self, gateway: Gateway, path: Path, recorder: Recorder, http: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.path = path
        self.recorder = recorder
        self.http = http
        # What `serve` would pass: the file, no environment, the flags it was started with.
        flags = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}, "upstream": {"url": recorder.url}}
        gateway.app[RUNTIME].load = lambda: config.load(path, environ={}, overrides=flags)

    async def reload(self, text: str | None = None) -> tuple[int, dict[str, Any]]:
        if text is not None:
            self.path.write_text(text)
        async with self.http.post(self.gateway.admin_url + "/reload") as response:
            return response.status, await response.json()

    async def patch(self, content_type: str, body: bytes) -> tuple[int, Any]:
        async with self.http.patch(self.gateway.url + PATH, data=body, headers={"Content-Type": content_type}) as response:
            await response.read()
            return response.status, response.headers

    def reloads(self, result: str) -> float | None:
        return self.gateway.app[METRICS].registry.get_sample_value("ims_gateway_config_reloads_total", {"result": result})


@pytest.fixture
async def reloadable(recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, tmp_path: Path) -> Reloadable:
    path = tmp_path / "gateway.toml"
    path.write_text(ENFORCE)
    return Reloadable(await make_gateway(recorder.url), path, recorder, http)


async def test_a_valid_file_takes_effect_for_new_requests(reloadable: Reloadable) -> None:
    assert (await reloadable.patch(V21_MEDIA_TYPE, FORBIDDEN))[0] == 400
    status, document = await reloadable.reload(OBSERVE)
    assert (status, document) == (200, {"result": "applied", "generation": 1, "restart_required": []})
    status, headers = await reloadable.patch(V21_MEDIA_TYPE, FORBIDDEN)
    assert status == 200
    assert headers.get("Deprecation") is None  # the v2.1 shape has no header configured
    assert [seen.body for seen in reloadable.recorder.seen] == [FORBIDDEN]
    status, headers = await reloadable.patch(V20_MEDIA_TYPE, V20_NAME)
    assert headers["Deprecation"] == "@1704067200"
    assert reloadable.recorder.seen[-1].headers["Content-Type"] == V20_MEDIA_TYPE
    assert reloadable.reloads("success") == 1
    assert reloadable.reloads("failure") is None  # never counted: no series


async def test_an_invalid_file_is_refused_and_the_running_config_stays(
    reloadable: Reloadable, caplog: pytest.LogCaptureFixture
) -> None:
    await reloadable.reload(ENFORCE)
    running = reloadable.gateway.app[RUNTIME].config
    status, document = await reloadable.reload(INVALID)
    assert status == 400
    assert document["result"] == "refused"
    assert document["generation"] == 1
    (problem,) = document["problems"]
    assert problem.startswith(f"{reloadable.path}: deprecation.v20_sunset_at: 2024-01-01T00:00:00Z is before")
    assert reloadable.gateway.app[RUNTIME].config is running
    status, headers = await reloadable.patch(V21_MEDIA_TYPE, FORBIDDEN)
    assert status == 400
    assert (await reloadable.patch(V20_MEDIA_TYPE, V20_NAME))[1]["Deprecation"] == "@1688169599"
    errors = [r for r in caplog.records if r.name == "ims_gateway.reload" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "config reload refused, generation 1 stays" in errors[0].getMessage()
    assert "deprecation.v20_sunset_at" in errors[0].getMessage()
    assert (reloadable.reloads("success"), reloadable.reloads("failure")) == (1, 1)
    assert reloadable.gateway.app[METRICS].registry.get_sample_value("ims_gateway_config_last_reload_successful") == 0


@pytest.mark.parametrize("text", ["[patch\n", '[upstream]\npool_size = 0\n'])
async def test_unreadable_or_invalid_values_are_refused_too(reloadable: Reloadable, text: str) -> None:
    status, document = await reloadable.reload(text)
    assert (status, document["result"], document["generation"]) == (400, "refused", 0)
    assert document["problems"]


async def test_a_missing_file_is_refused(reloadable: Reloadable) -> None:
    reloadable.path.unlink()
    status, document = await reloadable.reload()
    assert status == 400
    assert "cannot read the file: No such file or directory" in document["problems"][0]


async def test_settings_bound_at_start_need_a_restart_and_keep_their_values(
    reloadable: Reloadable, caplog: pytest.LogCaptureFixture
) -> None:
    started = reloadable.gateway.app[RUNTIME].config.settings
    text = '[upstream]\npool_size = 7\nread_timeout = 5\n[server]\nmax_header_bytes = 4096\n[logging]\nlevel = "debug"\n[patch]\nmax_body_bytes = 100\n'
    status, document = await reloadable.reload(text)
    assert status == 200
    assert document["restart_required"] == [
        "server.max_header_bytes",
        "upstream.read_timeout",
        "upstream.pool_size",
        "logging.level",
    ]
    settings = reloadable.gateway.app[RUNTIME].config.settings
    assert (settings.server, settings.upstream, settings.logging) == (started.server, started.upstream, started.logging)
    assert settings.patch.max_body_bytes == 100
    assert any("take effect only after a restart" in r.getMessage() for r in caplog.records)


async def test_a_gateway_without_a_config_source_refuses_to_reload(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(recorder.url)
    async with http.post(gateway.admin_url + "/reload") as response:
        assert response.status == 400
        document = await response.json()
    assert document == {
        "result": "refused",
        "generation": 0,
        "problems": ["this gateway was started without a configuration source to re-read"],
    }


async def test_a_request_in_flight_finishes_under_the_config_it_started_with(reloadable: Reloadable) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request, seen: Seen) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({})

    assert (await reloadable.reload(ENFORCE))[0] == 200
    reloadable.recorder.respond = hold
    in_flight = asyncio.create_task(reloadable.patch(V20_MEDIA_TYPE, V20_NAME))
    await arrived.wait()
    status, document = await reloadable.reload(OBSERVE)
    assert (status, document["generation"]) == (200, 2)
    release.set()
    status, headers = await in_flight
    assert status == 200
    assert headers["Deprecation"] == "@1688169599"  # the old generation's header
    assert reloadable.recorder.seen[0].headers["Content-Type"] == V21_MEDIA_TYPE  # rewritten: enforce decided
    status, headers = await reloadable.patch(V20_MEDIA_TYPE, V20_NAME)
    assert headers["Deprecation"] == "@1704067200"
    assert reloadable.recorder.seen[1].headers["Content-Type"] == V20_MEDIA_TYPE  # observe: as received


async def test_reloads_under_concurrent_load_fail_no_request(reloadable: Reloadable) -> None:
    files = [OBSERVE, INVALID, ENFORCE, "[patch\n"] * 3
    results: list[int] = []

    async def client(number: int) -> list[int]:
        statuses = []
        for index in range(20):
            body = (V20_MEDIA_TYPE, V20_NAME) if (number + index) % 2 else (V21_MEDIA_TYPE, b"[]")
            statuses.append((await reloadable.patch(*body))[0])
        return statuses

    async def reloader() -> None:
        for number, text in enumerate(files[:10]):
            # Spread the reloads over the load: the n-th once 15 * n requests have reached IMS.
            while len(reloadable.recorder.seen) < 15 * number:
                await asyncio.sleep(0.001)
            results.append((await reloadable.reload(text))[0])

    *statuses, _ = await asyncio.gather(*(client(n) for n in range(10)), reloader())
    flat = [status for per_client in statuses for status in per_client]
    assert len(flat) == 200
    assert set(flat) == {200}
    assert results == [200, 400, 200, 400] * 2 + [200, 400]
    assert (reloadable.reloads("success"), reloadable.reloads("failure")) == (5, 5)
    assert reloadable.gateway.app[RUNTIME].config.generation == 5
    # Both modes decided some of the v2.0 calls: enforce rewrote them, observe did not.
    forwarded_types = {seen.headers["Content-Type"] for seen in reloadable.recorder.seen if b'"replace"' in seen.body}
    assert forwarded_types == {V20_MEDIA_TYPE, V21_MEDIA_TYPE}


@pytest.mark.e2e
async def test_sighup_reloads_the_file_the_process_was_started_with(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(path), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = await _line_matching(process.stderr, r"listening on http://(\S+) \(admin on http://(\S+)\)")
        url = "http://" + line[1]

        async def deprecation_header() -> str | None:
            async with http.patch(url + PATH, data=V20_NAME, headers={"Content-Type": V20_MEDIA_TYPE}) as response:
                await response.read()
                return response.headers.get("Deprecation")

        assert await deprecation_header() is None
        path.write_text(ENFORCE)
        process.send_signal(signal.SIGHUP)
        await _line_matching(process.stderr, r"config reloaded: generation 1")
        assert await deprecation_header() == "@1688169599"
        path.write_text(INVALID)
        process.send_signal(signal.SIGHUP)
        await _line_matching(process.stderr, r"config reload refused, generation 1 stays")
        assert await deprecation_header() == "@1688169599"
    finally:
        process.kill()
        await process.wait()


async def _line_matching(stream: asyncio.StreamReader, pattern: str) -> tuple[str, ...]:
    """Read log lines until one matches (bounded: the process is killed if it never comes)."""
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        assert line, "the gateway exited"
        match = re.search(pattern, line)
        if match:
            return (match[0], *match.groups())



async def test_the_report_store_needs_a_restart_while_its_bound_and_retention_reload(reloadable: Reloadable) -> None:
    report = reloadable.gateway.app[METRICS].report
    status, document = await reloadable.reload(
        ENFORCE + '[report]\nstore = "redis://redis:6379/0"\nreplica = "renamed"\nmax_clients = 7\nretention = "1h"\n'
    )
    assert (status, document["restart_required"]) == (200, ["report.store", "report.replica"])
    assert (await reloadable.patch(V21_MEDIA_TYPE, FORBIDDEN))[0] == 400
    settings = reloadable.gateway.app[RUNTIME].config.settings.report
    assert (settings.store, settings.replica, settings.max_clients, settings.retention) == ("", "", 7, "1h")
    assert (report.store, report.local.max_clients, report.local.retention) == (None, 7, 3600.0)
