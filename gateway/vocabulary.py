"""The words the gateway uses for what happens to a request: one enum per question.

Producers (the parser, the policy, the PATCH pipeline, the upstream client) use these
members; the metrics derive their label sets from them, so a new member cannot be
forgotten there. Every value is a Prometheus label value and a word of the migration
report, so they are part of the operator's interface: rename none.

This module imports nothing from the gateway.
"""

from __future__ import annotations

import enum


class Shape(enum.StrEnum):
    """The body shape of an image PATCH, chosen by its media type."""

    V20 = "v2.0"
    V21 = "v2.1"
    UNSUPPORTED = "unsupported"  # any other media type: refused with 415


class Mode(enum.StrEnum):
    """How ``[patch] mode`` decided an image PATCH."""

    ENFORCE = "enforce"
    OBSERVE = "observe"  # forwarded as received; the outcome is what enforce would have done


class Outcome(enum.StrEnum):
    """What became of an image PATCH (in observe mode: what enforce would have done)."""

    FORWARDED = "forwarded"  # sent to IMS as received (v2.1, or an unrewritten v2.0)
    REWRITTEN = "rewritten"  # v2.0 rewritten to v2.1 (or rerouted to the successor API) and sent
    REJECTED = "rejected"  # refused by the gateway, nothing sent: see the Reason
    CONFLICT = "conflict"  # a v2.0 add of an existing attribute: 409, nothing sent
    UPSTREAM_ANSWER = "upstream_answer"  # IMS refused the v2.0 add check's read; its answer relayed
    UPSTREAM_ERROR = "upstream_error"  # IMS unreachable, too slow, or broken off
    ABORTED = "aborted"  # the client left before a decision
    OTHER = "other"


class Reason(enum.StrEnum):
    """Why an image PATCH was refused."""

    # The parser's, in Glance's order of checks.
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MISSING_BODY = "missing_body"
    MALFORMED_JSON = "malformed_json"
    BAD_BODY_TYPE = "bad_body_type"
    BAD_OPERATION_OBJECT = "bad_operation_object"
    MISSING_OP = "missing_op"
    BAD_OP = "bad_op"
    MISSING_PATH = "missing_path"
    BAD_POINTER = "bad_pointer"
    BAD_DEPTH = "bad_depth"
    MISSING_VALUE = "missing_value"
    READ_ONLY = "read_only"
    RESERVED = "reserved"
    DUPLICATE_MEMBER = "duplicate_member"
    TOO_DEEP = "too_deep"  # a value nested deeper than patch.max_value_depth
    # The gateway's own.
    FORBIDDEN_ATTRIBUTE = "forbidden_attribute"
    TOO_LARGE = "too_large"
    BODY_TIMEOUT = "body_timeout"
    CONTENT_ENCODING = "content_encoding"
    METHOD_OVERRIDE = "method_override"  # an override header, ?_method=, a form body, json-patch on another method
    ROUTING_HEADER = "routing_header"  # SCRIPT_NAME and the like, refused (server.routing_headers = "refuse", or signed)
    CONNECTION_HEADER = "connection_header"  # Connection names a header the gateway decides on
    BAD_TARGET = "bad_target"  # not origin-form, control characters, a fragment, or json-patch not on an image
    HTTP_VERSION = "http_version"  # neither HTTP/1.0 nor HTTP/1.1
    SIGNATURE = "signature"  # signed with a listed access key, and the signature did not verify
    BROWNOUT = "brownout"
    SUNSET = "sunset"
    OTHER = "other"


class AttributeClass(enum.StrEnum):
    """What kind of attribute an operation changes; never the attribute's own name."""

    NAME = "name"
    DESCRIPTION = "description"  # __description
    CUSTOM = "custom"
    SYSTEM = "system"  # what the policy refuses


class Route(enum.StrEnum):
    """The route class of a request, decided on its target as the upstream may read it."""

    IMAGE_PATCH = "image_patch"
    IMAGE_DATA = "image_data"
    IMAGES = "images"
    OTHER = "other"


class FailureKind(enum.StrEnum):
    """How IMS failed a request."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    RESET = "reset"
    TLS = "tls"


class Stage(enum.StrEnum):
    """When IMS failed: before its answer (the client got 502/504) or in the middle of it."""

    BEFORE_RESPONSE = "before_response"
    MID_STREAM = "mid_stream"


class Signature(enum.StrEnum):
    """What became of a request carrying a Huawei Cloud AK/SK signature."""

    PASSED_THROUGH = "passed_through"  # an unlisted key: forwarded with all it signed as received
    RESIGNED = "resigned"  # a listed key: verified, then what the gateway sent signed with it
    REFUSED = "refused"  # a listed key whose signature did not verify: 401, nothing forwarded


class ReloadResult(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


__all__ = [
    "AttributeClass",
    "FailureKind",
    "Mode",
    "Outcome",
    "Reason",
    "ReloadResult",
    "Route",
    "Shape",
    "Signature",
    "Stage",
]
