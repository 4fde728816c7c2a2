"""The emulator's HTTP app: routes, handlers, the request journal, starting and serving it."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.patch.parser import V21_MEDIA_TYPE, Patch, PatchError, parse
from ims_emulator.cloudimages import apply_cloudimages_patch
from ims_emulator.errors import EMPTY_BODY, ImsError, error_response, status_code
from ims_emulator.glance import apply_glance_patch
from ims_emulator.images import (
    CHUNK_SIZE,
    Image,
    ImageStore,
    check_values,
    new_image,
    receive_data,
    schema_error,
    type_reason,
)

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


def _image_response(image: Image, *, status: int = 200) -> web.Response:
    return web.json_response(image.document(), status=status)


async def _raw_body(request: web.Request) -> bytes | None:
    """The body, or None without one (no Content-Length above 0, no Transfer-Encoding)."""
    return await request.read() if request.body_exists else None


async def _json_body(request: web.Request) -> Any:
    body = await _raw_body(request)
    if body is None:
        raise ImsError(400, "Body expected in request.", code=EMPTY_BODY)
    try:
        # Strict UTF-8 like Glance's oslo jsonutils: no BOM, no UTF-16 sniffing.
        return json.loads(str(body, "utf-8"))
    except ValueError:
        raise ImsError(400, "Malformed JSON in request body.") from None


def _patch_error(exc: PatchError) -> ImsError:
    code = EMPTY_BODY if exc.reason == "missing_body" else None
    return ImsError(exc.status, exc.message, code=code, headers=exc.headers)


def _parse_glance_patch(content_type: str | None, body: bytes | None) -> Patch:
    """Glance's deserializer: each operation's structure, then its value, in order."""
    try:
        patch = parse(content_type, body)
    except PatchError as exc:
        # The operations before the failing one are checked first, as Glance does.
        check_values(exc.parsed)
        raise _patch_error(exc) from None
    check_values(patch.changes)
    return patch


async def create_image(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise schema_error(type_reason(body, "object"))
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


async def list_images(request: web.Request) -> web.Response:
    limit = _limit(request.query.get("limit"))
    images = request.app[IMAGE_STORE].page(request.query.get("marker"), limit)
    params = [(key, value) for key, value in request.query.items() if key != "marker"]
    body: dict[str, Any] = {
        "images": [image.document() for image in images],
        "schema": "/v2/schemas/images",
        "first": _listing_link(params),
    }
    if images and len(images) == limit:
        body["next"] = _listing_link([*params, ("marker", images[-1].id)])
    return web.json_response(body)


async def show_image(request: web.Request) -> web.Response:
    return _image_response(request.app[IMAGE_STORE].get(request.match_info["image_id"]))


async def delete_image(request: web.Request) -> web.Response:
    store = request.app[IMAGE_STORE]
    image_id = request.match_info["image_id"]
    image = store.images.get(image_id)
    if image is None:
        raise ImsError(404, f"Failed to find image {image_id} to delete")
    if image.attributes["protected"]:
        raise ImsError(403, f"Image {image_id} is protected and cannot be deleted.")
    store.remove(image)
    return web.Response(status=204)


async def update_image(request: web.Request) -> web.Response:
    # The raw header: Glance compares it byte for byte, request.content_type lowercases it.
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    patch = _parse_glance_patch(content_type, await _raw_body(request))
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    apply_glance_patch(image, patch)
    return _image_response(image)


def _media_type(content_type: str | None) -> str | None:
    return None if content_type is None else content_type.partition(";")[0].strip().lower()


async def update_cloud_image(request: web.Request) -> web.Response:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != "application/json":
        raise ImsError(415, f"Unsupported Content-Type {content_type!r}: use application/json.")
    try:
        patch = parse(V21_MEDIA_TYPE, await _raw_body(request), glance_attribute_checks=False)
    except PatchError as exc:
        raise _patch_error(exc) from None
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    apply_cloudimages_patch(image, patch.changes)
    return _image_response(image)


def _require_octet_stream(request: web.Request) -> None:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != OCTET_STREAM:
        raise ImsError(415, f"Invalid content type {content_type}")


async def upload_image_data(request: web.Request) -> web.Response:
    _require_octet_stream(request)
    store = request.app[IMAGE_STORE]
    image = store.get(request.match_info["image_id"])
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


async def download_image_data(request: web.Request) -> web.StreamResponse:
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    if image.data is None:
        return web.Response(status=204)
    headers = {hdrs.CONTENT_TYPE: OCTET_STREAM, "Content-MD5": image.data.md5}
    return web.FileResponse(image.data.path, chunk_size=CHUNK_SIZE, headers=headers)


# ---------------------------------------------------------------------------------------
# Middleware and app




def _aiohttp_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "The resource could not be found."
    if exc.status == 405:
        return f"The method {request.method} is not allowed for this resource."
    return exc.text or exc.reason


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
        # aiohttp's own answers (no route, wrong method, body past client_max_size).
        headers = {"Allow": exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(exc.status, status_code(exc.status), _aiohttp_message(request, exc), headers=headers)


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


def build_emulator_app(*, journal: list[RecordedRequest] | None = None) -> web.Application:
    """The emulator app; with ``journal``, every request is appended to it before it is handled."""
    # Outermost first: every answer, errors included, carries the request id, and the
    # journal sees each request before a handler can refuse it.
    middlewares: list[Middleware] = [_request_id, _render_errors]
    if journal is not None:
        middlewares.append(_journal_middleware(journal))
    app = web.Application(middlewares=middlewares, client_max_size=JSON_BODY_LIMIT)
    app[EMULATOR_JOURNAL] = journal
    app.cleanup_ctx.append(_image_store)
    app.router.add_post("/v2/images", create_image)
    app.router.add_get("/v2/images", list_images)
    app.router.add_get("/v2/images/{image_id}", show_image)
    app.router.add_delete("/v2/images/{image_id}", delete_image)
    app.router.add_patch("/v2/images/{image_id}", update_image)
    app.router.add_put("/v2/images/{image_id}/file", upload_image_data)
    app.router.add_get("/v2/images/{image_id}/file", download_image_data)
    app.router.add_patch("/v2/cloudimages/{image_id}", update_cloud_image)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_emulator(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start the emulator on ``host:port`` (0: a free port); the runner and the base URL."""
    runner = web.AppRunner(build_emulator_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, f"http://{_url_host(host)}:{bound_port}"


def run_emulator(host: str, port: int) -> None:
    """Serve the emulator until interrupted (``ims-gateway emulator --listen``)."""
    web.run_app(build_emulator_app(), host=host, port=port)
