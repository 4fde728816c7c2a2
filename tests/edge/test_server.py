"""The aiohttp internals the gateway's listener relies on, named in one place.

gateway.edge.server subclasses aiohttp's RequestHandler and Server and reads some of
their private attributes (the head timeout, parse errors in the IMS shape, feeding a
body during shutdown, the 505 for other HTTP versions); gateway.service.cli reads a
site's listening sockets. An aiohttp release that renames one fails here, by name,
before any behaviour test fails for a reason that is hard to see.
"""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.edge.server import GatewayProtocol, GatewayServer
from tests.conftest import Gateway, GatewayFactory, Recorder

PROTOCOL_STATE = ("_close", "_force_close", "_current_request", "_parser", "_request_count", "_messages", "_loop")


async def test_the_request_handler_state_the_protocol_reads_exists(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(recorder.url)
    host, port = gateway.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    try:
        for _ in range(100):
            protocols = list(gateway.server.runner.server._connections)  # type: ignore[union-attr]
            if protocols:
                break
            await asyncio.sleep(0.01)
        [protocol] = protocols
        assert isinstance(protocol, GatewayProtocol)
        missing = [name for name in PROTOCOL_STATE if not hasattr(protocol, name)]
        assert missing == [], f"aiohttp's RequestHandler no longer has {missing}"
        assert len(protocol._messages) == 0  # a sized queue of parsed heads
    finally:
        writer.close()


def test_the_server_and_request_hooks_exist() -> None:
    assert "request_factory" in inspect.signature(web.Server.__init__).parameters
    server = GatewayServer(lambda request: None, header_timeout=1.0, loop=asyncio.new_event_loop())
    assert hasattr(server, "_kwargs") and hasattr(server, "_loop")
    assert list(inspect.signature(web.BaseRequest.__init__).parameters)[1:7] == [
        "message", "payload", "protocol", "payload_writer", "task", "loop",
    ]  # fmt: skip
    assert isinstance(web.BaseRequest.ATTRS, frozenset)
    assert hasattr(web.AppRunner, "_make_server")
    for name in ("data_received", "connection_lost", "handle_error", "force_close"):
        assert callable(getattr(RequestHandler, name))
    server._loop.close()


async def test_a_site_keeps_its_listening_server(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(recorder.url)
    [site] = gateway.server.runner.sites  # type: ignore[union-attr]
    assert site._server is not None and site._server.sockets  # type: ignore[attr-defined]
