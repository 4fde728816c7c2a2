"""The least aiohttp's server can do for a refused PATCH: one fixed 400, nothing read, checked or counted.

aiohttp's low-level server (``aiohttp.web.Server``, what the gateway's traffic listener
runs on) with a handler that answers every request with the same IMS-shaped error body.
It bounds from below what any refusal served by aiohttp can cost: ``benchmarks.instructions``
measures it beside the gateway and the floor on the refused PATCH.

    python -m benchmarks.canned --listen 127.0.0.1:8082
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

BODY = json.dumps({
    "error": {
        "code": "IMSGW.0403",
        "reason": "forbidden_attribute",
        "message": "Only the name, the description (__description) and customized attributes may be modified.",
        "request_id": "req-00000000-0000-4000-8000-000000000000",
    }
}).encode()  # fmt: skip


async def refuse(request: web.BaseRequest) -> web.StreamResponse:
    if request.body_exists:
        await request.read()  # the body, as any server must consume it to read the next request
    return web.Response(status=400, body=BODY, content_type="application/json")


async def serve(host: str, port: int) -> None:
    server = web.Server(refuse, access_log=None)
    await asyncio.get_running_loop().create_server(server, host, port)
    await asyncio.Event().wait()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--listen", required=True, metavar="HOST:PORT")
    args = arguments.parse_args()
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop  # the gateway's loop as shipped, when installed
    except ImportError:
        asyncio.run(serve(host, int(port)))
    else:
        uvloop.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
