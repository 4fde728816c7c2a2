"""The emulator's HTTP app: routes, handlers, the request journal, starting and serving it."""

from __future__ import annotations

import re
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.edge import signing
from ims_emulator import deserializer, stack
from ims_emulator.cloudimages import apply_cloudimages_patch
from ims_emulator.errors import ImsError, error_response, status_code
from ims_emulator.glance import apply_glance_patch
from ims_emulator.images import CHUNK_SIZE, Image, ImageStore, new_image, receive_data

REQUEST_ID = "X-Openstack-Request-Id"
OCTET_STREAM = "application/octet-stream"
# Bounds the JSON bodies only: image data is streamed and never limited by it.
JSON_BODY_LIMIT = 1024**2
# Glance's limit_param_default and api_limit_max.
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000

@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it reached the emulator (``body`` is None for data transfers and bodiless requests)."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes | None




EMULATOR_JOURNAL = web.AppKey[list[RecordedRequest] | None]("ims_emulator_journal")
IMAGE_STORE = web.AppKey("ims_emulator_store", ImageStore)
ENVIRON = web.RequestKey("ims_emulator_environ", stack.Environ)
Params = dict[str, str]
_CONTENT_HASH_HEADERS: Final = ("X-Sdk-Content-Sha256", "X-Sdk-Content-Sm3")
Route = Callable[[web.Request, Params], Awaitable[web.StreamResponse]]


def _image_response(image: Image, *, status: int = 200) -> web.Response:
    return web.json_response(image.document(), status=status)


async def _raw_body(request: web.Request) -> bytes | None:
    """The body, or None without one (no Content-Length above 0, no Transfer-Encoding)."""
    return await request.read() if request.body_exists else None


async def _json_body(request: web.Request) -> Any:
    return deserializer.request_body(await _raw_body(request))


async def create_image(request: web.Request, params: Params) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise deserializer.schema_error(deserializer.type_reason(body, "object"))
    image = new_image(body)
    request.app[IMAGE_STORE].add(image)
    response = _image_response(image, status=201)
    response.headers[hdrs.LOCATION] = f"/v2/images/{image.id}"
    return response


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise ImsError(400, "limit param must be an integer") from None
    if limit <= 0:
        raise ImsError(400, "limit param must be positive")
    return min(limit, MAX_LIMIT)


def _listing_link(params: list[tuple[str, str]]) -> str:
    return f"/v2/images?{urlencode(params)}" if params else "/v2/images"


async def list_images(request: web.Request, params: Params) -> web.Response:
    limit = _limit(request.query.get("limit"))
    images = request.app[IMAGE_STORE].page(request.query.get("marker"), limit)
    query = [(key, value) for key, value in request.query.items() if key not in ("marker", "_method")]
    body: dict[str, Any] = {
        "images": [image.document() for image in images],
        "schema": "/v2/schemas/images",
        "first": _listing_link(query),
    }
    if images and len(images) == limit:
        body["next"] = _listing_link([*query, ("marker", images[-1].id)])
    return web.json_response(body)


async def show_image(request: web.Request, params: Params) -> web.Response:
    return _image_response(request.app[IMAGE_STORE].get(params["image_id"]))


async def delete_image(request: web.Request, params: Params) -> web.Response:
    store = request.app[IMAGE_STORE]
    image_id = params["image_id"]
    image = store.images.get(image_id)
    if image is None:
        raise ImsError(404, f"Failed to find image {image_id} to delete")
    if image.attributes["protected"]:
        raise ImsError(403, f"Image {image_id} is protected and cannot be deleted.")
    store.remove(image)
    return web.Response(status=204)


async def update_image(request: web.Request, params: Params) -> web.Response:
    # The content type as the stack gives it to webob, compared byte for byte by Glance.
    changes = deserializer.update(request[ENVIRON].content_type, await _raw_body(request))
    image = request.app[IMAGE_STORE].get(params["image_id"])
    apply_glance_patch(image, changes)
    return _image_response(image)


def _media_type(content_type: str | None) -> str | None:
    return None if content_type is None else content_type.partition(";")[0].strip().lower()


async def update_cloud_image(request: web.Request, params: Params) -> web.Response:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != "application/json":
        raise ImsError(415, f"Unsupported Content-Type {content_type!r}: use application/json.")
    changes = deserializer.changes_of(deserializer.request_body(await _raw_body(request)), 10, validate=False)
    image = request.app[IMAGE_STORE].get(params["image_id"])
    apply_cloudimages_patch(image, changes)
    return _image_response(image)


async def deactivate_image(request: web.Request, params: Params) -> web.Response:
    image = request.app[IMAGE_STORE].get(params["image_id"])
    if image.status not in ("active", "deactivated"):
        raise ImsError(403, f"Not allowed to deactivate image in status '{image.status}'")
    image.attributes["status"] = "deactivated"
    return web.Response(status=204)


async def reactivate_image(request: web.Request, params: Params) -> web.Response:
    image = request.app[IMAGE_STORE].get(params["image_id"])
    if image.status not in ("active", "deactivated"):
        raise ImsError(403, f"Not allowed to reactivate image in status '{image.status}'")
    image.attributes["status"] = "active"
    return web.Response(status=204)


async def add_tag(request: web.Request, params: Params) -> web.Response:
    image = request.app[IMAGE_STORE].get(params["image_id"])
    if params["tag"] not in image.attributes["tags"]:
        image.attributes["tags"].append(params["tag"])
    return web.Response(status=204)


async def delete_tag(request: web.Request, params: Params) -> web.Response:
    image = request.app[IMAGE_STORE].get(params["image_id"])
    if params["tag"] not in image.attributes["tags"]:
        raise ImsError(404, f"Tag {params['tag']} not found")
    image.attributes["tags"].remove(params["tag"])
    return web.Response(status=204)


def _require_octet_stream(request: web.Request) -> None:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != OCTET_STREAM:
        raise ImsError(415, f"Invalid content type {content_type}")


async def upload_image_data(request: web.Request, params: Params) -> web.Response:
    _require_octet_stream(request)
    store = request.app[IMAGE_STORE]
    image = store.get(params["image_id"])
    if image.status != "queued":
        raise ImsError(409, f"Image status transition from {image.status} to saving is not allowed")
    image.attributes["status"] = "saving"
    try:
        data = await receive_data(request.content, store.new_data_path())
    except BaseException:
        # Like Glance's _restore: a failed upload leaves the image queued for another try.
        image.attributes["status"] = "queued"
        raise
    if not store.holds(image):
        data.path.unlink(missing_ok=True)
        raise ImsError(
            410,
            f"Image {image.id} could not be found after upload. The image may have been deleted "
            "during the upload, cleaning up the chunks uploaded.",
        )
    image.attach(data)
    return web.Response(status=204)


async def download_image_data(request: web.Request, params: Params) -> web.StreamResponse:
    image = request.app[IMAGE_STORE].get(params["image_id"])
    if image.data is None:
        return web.Response(status=204)
    headers = {hdrs.CONTENT_TYPE: OCTET_STREAM, "Content-MD5": image.data.md5}
    return web.FileResponse(image.data.path, chunk_size=CHUNK_SIZE, headers=headers)


# ---------------------------------------------------------------------------------------
# Routing, as Glance's router does it


_IMAGE = "/v2/images/(?P<image_id>[^/]+?)"
# (method, path pattern, handler, whether a body is refused: Glance's body_reject).
# Routes anchors with "$", which matches before a final newline, as Python's does.
ROUTES: Final[tuple[tuple[str, re.Pattern[str], Route, bool], ...]] = tuple(
    (method, re.compile(f"^{pattern}$"), handler, body_reject)
    for method, pattern, handler, body_reject in (
        ("POST", "/v2/images", create_image, False),
        ("GET", "/v2/images", list_images, False),
        ("GET", _IMAGE, show_image, True),
        ("DELETE", _IMAGE, delete_image, True),
        ("PATCH", _IMAGE, update_image, False),
        ("PUT", f"{_IMAGE}/file", upload_image_data, False),
        ("GET", f"{_IMAGE}/file", download_image_data, False),
        ("POST", f"{_IMAGE}/actions/deactivate", deactivate_image, True),
        ("POST", f"{_IMAGE}/actions/reactivate", reactivate_image, True),
        ("PUT", f"{_IMAGE}/tags/(?P<tag>[^/]+?)", add_tag, False),
        ("DELETE", f"{_IMAGE}/tags/(?P<tag>[^/]+?)", delete_tag, False),
        ("PATCH", "/v2/cloudimages/(?P<image_id>[^/]+?)", update_cloud_image, False),
    )
)
_MAY_HAVE_A_CHUNKED_BODY: Final = frozenset({"POST", "PUT", "PATCH"})


def _has_body(request: web.Request) -> bool:
    """Glance's JSONRequestDeserializer.has_body, on the real method."""
    if request.headers.get(hdrs.TRANSFER_ENCODING, "").lower() == "chunked" and request.method in _MAY_HAVE_A_CHUNKED_BODY:
        return True
    return (request.content_length or 0) > 0


async def dispatch(request: web.Request) -> web.StreamResponse:
    form = await request.read() if request.method == "POST" and stack.is_form(request.headers) else None
    try:
        env = stack.environ(request.method, request.raw_path, request.headers, form)
    except stack.NoVersion:
        return web.json_response({"versions": [{"id": "v2.17", "status": "CURRENT"}]}, status=300)
    request[ENVIRON] = env
    allowed = []
    for method, pattern, handler, body_reject in ROUTES:
        match = pattern.match(env.path)
        if match is None:
            continue
        if method != env.method:
            allowed.append(method)
            continue
        if body_reject and _has_body(request):
            raise ImsError(400, "A body is not expected with this request.")
        return await handler(request, match.groupdict())
    if allowed:
        raise ImsError(405, f"The method {env.method} is not allowed for this resource.", headers={"Allow": ", ".join(allowed)})
    raise ImsError(404, "The resource could not be found.")


@web.middleware
async def _request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID) or f"req-{uuid.uuid4()}"
    response = await handler(request)
    response.headers[REQUEST_ID] = request_id
    return response


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ImsError as exc:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)
    except web.HTTPException as exc:
        # aiohttp's own answers (a body past client_max_size).
        return error_response(exc.status, status_code(exc.status), exc.text or exc.reason)


def _signature_middleware(credentials: Mapping[str, str]) -> Middleware:
    """IMS's API gateway: every request must carry a valid AK/SK signature of a known key."""

    @web.middleware
    async def verify(request: web.Request, handler: Handler) -> web.StreamResponse:
        payload: signing.Payload
        if not request.body_exists:
            payload = b""
        elif any(request.headers.get(name, "").strip() == signing.UNSIGNED_PAYLOAD for name in _CONTENT_HASH_HEADERS):
            payload = signing.UNSIGNED  # image data streams on, unread
        else:
            payload = await request.read()
        raw_path, _, raw_query = request.raw_path.partition("?")
        verdict = signing.verify(request.method, raw_path, raw_query, list(request.headers.items()), payload, credentials)
        if not verdict.ok:
            problem = verdict.reason.value if verdict.reason is not None else "invalid signature"
            raise ImsError(401, f"Incorrect IAM authentication information: {problem}", code="APIG.0301")
        return await handler(request)

    return verify


def _journal_middleware(journal: list[RecordedRequest]) -> Middleware:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Image data is never buffered: /file transfers are recorded without their body.
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        try:
            body = None if request.path.endswith("/file") else await _raw_body(request)
        except web.HTTPRequestEntityTooLarge:
            journal.append(RecordedRequest(request.method, request.raw_path, headers, None))
            raise
        journal.append(RecordedRequest(request.method, request.raw_path, headers, body))
        return await handler(request)

    return record


async def _image_store(app: web.Application) -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory(prefix="ims-emulator-") as directory:
        app[IMAGE_STORE] = ImageStore(Path(directory))
        yield


def build_emulator_app(
    *, journal: list[RecordedRequest] | None = None, credentials: Mapping[str, str] | None = None
) -> web.Application:
    """The emulator app; with ``journal``, every request is appended to it before it is handled;
    with ``credentials`` (access key -> secret key), every request must be signed with one of
    them, as IMS's API gateway wants (401 otherwise)."""
    # Outermost first: every answer, errors included, carries the request id, and the
    # journal sees each request before a handler can refuse it.
    middlewares: list[Middleware] = [_request_id, _render_errors]
    if journal is not None:
        middlewares.append(_journal_middleware(journal))
    if credentials:
        middlewares.append(_signature_middleware(credentials))
    app = web.Application(middlewares=middlewares, client_max_size=JSON_BODY_LIMIT)
    app[EMULATOR_JOURNAL] = journal
    app.cleanup_ctx.append(_image_store)
    # Every path, a decoded newline included: the router is dispatch's, as Routes is Glance's.
    app.router.add_route("*", "/{tail:(?s:.*)}", dispatch)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_emulator(
    host: str = "127.0.0.1", port: int = 0, credentials: Mapping[str, str] | None = None
) -> tuple[web.AppRunner, str]:
    """Start the emulator on ``host:port`` (0: a free port); the runner and the base URL."""
    # Embedded in the gateway, whose access log already has a line for every request.
    runner = web.AppRunner(build_emulator_app(credentials=credentials), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, f"http://{_url_host(host)}:{bound_port}"


def run_emulator(
    host: str, port: int, credentials: Mapping[str, str] | None = None, *, sock: socket.socket | None = None
) -> None:
    """Serve the emulator until interrupted (``ims-gateway emulator --listen``), on ``sock``
    when given (bound by the caller, who reports an address in use), else on ``host:port``;
    aiohttp's access log writes a line for every request."""
    app = build_emulator_app(credentials=credentials)
    if sock is None:
        web.run_app(app, host=host, port=port)
    else:
        web.run_app(app, sock=sock)
