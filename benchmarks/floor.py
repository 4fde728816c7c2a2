"""The same-runtime floor: the least an aiohttp reverse proxy can do.

Every request streams to the upstream and every response streams back through a
``StreamResponse``; nothing is parsed, checked or counted. Only the headers HTTP says a
proxy must not forward are dropped. ims-gateway is measured against this.

    python -m benchmarks.floor --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    name.lower()
    for name in ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Expect", "Host")
)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _forwardable(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in HOP_BY_HOP)


async def proxy(request: web.Request) -> web.StreamResponse:
    data = request.content if request.body_exists else None
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM] + request.raw_path,
        headers=_forwardable(request.headers),
        data=data,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=_forwardable(upstream.headers))
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100),
        auto_decompress=False,
        skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    yield
    await app[SESSION].close()


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--listen", required=True, metavar="HOST:PORT")
    arguments.add_argument("--upstream", required=True, metavar="URL")
    args = arguments.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(build_app(args.upstream), host=host, port=int(port), access_log=None, print=None, auto_decompress=False)


if __name__ == "__main__":
    main()
