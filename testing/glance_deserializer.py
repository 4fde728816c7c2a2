"""Glance's own reading of image PATCH bodies, in bulk. Runs in the Glance virtualenv.

stdin: a JSON array of ``[content_type or null, body as base64 or null]``; stdout: a JSON
array with one ``{"full": outcome, "attributes": outcome, "structural": outcome}`` per
request. ``full`` is ``glance.api.v2.images.RequestDeserializer().update(request)`` as
Glance 33 runs it; ``attributes`` the same with a schema that takes any value (Glance's
read-only and reserved checks kept); ``structural`` the same with ``_validate_change``
doing nothing (no attribute checks at all). An outcome is ``{"status", "message", "changes"}``: 200 and every
change, or the HTTP error Glance raised (500 for any other exception, as its WSGI layer
answers) with the changes of the operation objects before the failing one. A change is
``[op, path tokens]`` for remove and ``[op, path tokens, value]`` otherwise.

Nothing here imports the gateway: it is Glance's code, driven through a webob request.
"""

from __future__ import annotations

import base64
import json
import sys
import warnings
from typing import Any

warnings.simplefilter("ignore")

import jsonschema  # noqa: E402
import webob.exc  # noqa: E402
from glance.api.v2.images import RequestDeserializer  # noqa: E402
from glance.common import wsgi  # noqa: E402

_VALIDATORS: dict[str, Any] = {}


def _validate(instance: Any, schema: Any, cls: Any = None, *args: Any, **kwargs: Any) -> None:
    """jsonschema.validate, the schema's own check run once per schema rather than on
    every change (it is most of the time a change takes): the same validator, the same
    best match, the same error."""
    key = json.dumps([schema, repr(cls), repr(args), repr(kwargs)], sort_keys=True, default=repr)
    validator = _VALIDATORS.get(key)
    if validator is None:
        klass = cls or jsonschema.validators.validator_for(schema)
        klass.check_schema(schema)
        validator = _VALIDATORS[key] = klass(schema, *args, **kwargs)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


jsonschema.validate = _validate  # glance.schema.Schema.validate looks it up on each call


class _AnyValue:
    """A schema every value matches."""

    def validate(self, obj: Any) -> None:
        return None


class _Recording(RequestDeserializer):  # type: ignore[misc]
    """Glance's deserializer, keeping each change once Glance has validated it."""

    def __init__(self, checks: bool, schema: Any = None) -> None:
        super().__init__(schema=schema)
        self.checks = checks
        self.seen: list[list[Any]] = []

    def _validate_change(self, change: dict[str, Any]) -> None:
        if self.checks:
            super()._validate_change(change)
        entry = [change["op"], change["path"]]
        if "value" in change:
            entry.append(change["value"])
        self.seen.append(entry)


def _request(content_type: str | None, body: str | None) -> Any:
    request = wsgi.Request.blank("/v2/images/00000000-0000-0000-0000-000000000000")
    request.method = "PATCH"
    if content_type is not None:
        request.headers["Content-Type"] = content_type
    if body is not None:
        request.body = base64.b64decode(body)
    return request


def _outcome(deserializer: _Recording, content_type: str | None, body: str | None) -> dict[str, Any]:
    deserializer.seen = []
    try:
        deserializer.update(_request(content_type, body))
    except webob.exc.HTTPException as exc:
        message = exc.explanation if exc.code != 415 else exc.detail
        return {"status": exc.code, "message": message, "changes": deserializer.seen}
    except Exception as exc:  # Glance's WSGI layer turns these into a 500
        return {"status": 500, "message": f"{type(exc).__name__}: {exc}", "changes": deserializer.seen}
    return {"status": 200, "message": None, "changes": deserializer.seen}


def main() -> None:
    requests = json.load(sys.stdin)
    modes = {
        "full": _Recording(checks=True),
        "attributes": _Recording(checks=True, schema=_AnyValue()),
        "structural": _Recording(checks=False),
    }
    results = [
        {mode: _outcome(deserializer, content_type, body) for mode, deserializer in modes.items()}
        for content_type, body in requests
    ]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
