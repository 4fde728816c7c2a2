"""The gateway's own error answers: the IMS error shape, byte for byte what json.dumps makes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge import errors

details = st.none() | st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3), max_size=2)
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.none() | st.from_regex(r"[A-Za-z0-9._:@-]{1,20}", fullmatch=True), details)
def test_the_body_is_the_error_document_as_json(code: str, message: str, request_id: str | None, more: Any) -> None:
    response = errors.error_response(400, code, message, request_id=request_id, details=more)
    document = errors.error_document(code, message, request_id=request_id, details=more)
    assert response.body == json.dumps(document, ensure_ascii=False).encode()
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


@given(st.text(max_size=20))
def test_any_message_still_makes_json_a_client_can_read(message: str) -> None:
    body = errors.error_response(400, "IMSGW.0400", message).body
    assert isinstance(body, bytes)
    assert json.loads(body)["error"]["code"] == "IMSGW.0400"


def test_connection_close_closes() -> None:
    response = errors.error_response(408, errors.REQUEST_TIMEOUT, "late", headers={"Connection": "close"})
    assert response.headers["Connection"] == "close"
    assert response.keep_alive is False
