"""gateway.policy: only name, __description and customized attributes may change."""

from __future__ import annotations

import json

import pytest

from gateway.patch.parser import V21_MEDIA_TYPE, Change, parse
from gateway.patch.policy import (
    DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES,
    DEFAULT_FORBIDDEN_ATTRIBUTES,
    DEFAULT_FORBIDDEN_PREFIXES,
    GLANCE_IMAGE_OBJECT_ATTRIBUTES,
    GLANCE_PROTECTED_ATTRIBUTES,
    IMS_SYSTEM_ATTRIBUTES,
    AttributeClass,
    Policy,
    Violation,
)
from testing.paths import REPO

ONLY = "only name, __description and customized attributes may be modified through this API"
OPS = ("add", "remove", "replace")


def change(pointer: str, op: str = "replace", value: object = "x") -> Change:
    """The change parse() makes of one v2.1 operation (without Glance's 403 checks)."""
    item = {"op": op, "path": pointer, "value": value}
    body = json.dumps([item]).encode()
    (parsed,) = parse(V21_MEDIA_TYPE, body, glance_attribute_checks=False).changes
    return parsed


def deep(*path: str, op: str = "add") -> Change:
    """A change deeper than one token; parse() refuses these except for locations."""
    return Change(op, path, "/" + "/".join(path), "x")


DEFAULT = Policy()


# -- the IMS table and Glance's names ----------------------------------------------


def test_the_ims_table_is_complete() -> None:
    assert len(IMS_SYSTEM_ATTRIBUTES) == len(set(IMS_SYSTEM_ATTRIBUTES)) == 60
    assert {"name", "__description", "__os_type", "__support_agent_list", "file"} <= set(
        IMS_SYSTEM_ATTRIBUTES
    )


def test_default_forbidden_names_are_the_sorted_union_minus_the_allowed() -> None:
    union = set(IMS_SYSTEM_ATTRIBUTES) | set(GLANCE_PROTECTED_ATTRIBUTES) | set(GLANCE_IMAGE_OBJECT_ATTRIBUTES)

    assert DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES == ("name", "__description")
    assert tuple(sorted(union - {"name", "__description"})) == DEFAULT_FORBIDDEN_ATTRIBUTES
    assert DEFAULT_FORBIDDEN_PREFIXES == ("__", "os_glance")


@pytest.mark.parametrize(
    "name",
    ["direct_url", "locations", "location", "deleted", "deleted_at", "os_hash_algo",
     "os_hash_value", "os_hidden", "created_at", "updated_at", "status", "checksum",
     "size", "virtual_size", "self", "file", "schema", "id", "stores"],
)  # fmt: skip
def test_glance_protected_attributes(name: str) -> None:
    assert name in GLANCE_PROTECTED_ATTRIBUTES
    assert name in DEFAULT_FORBIDDEN_ATTRIBUTES


@pytest.mark.parametrize(
    "name",
    # Glance's image object answers to these: replace /image_id redirects the save.
    ["image_id", "extra_properties", "delete", "member", "set_data", "_abc_impl"],
)
def test_glance_image_object_attributes_are_forbidden(name: str) -> None:
    change = Change("replace", (name,), f"/{name}", "x")
    assert name in DEFAULT_FORBIDDEN_ATTRIBUTES
    assert [v.attribute for v in Policy().violations([change])] == [name]


# -- what is refused ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", sorted(set(IMS_SYSTEM_ATTRIBUTES) - {"name", "__description"})
)
@pytest.mark.parametrize("op", OPS)
def test_every_ims_system_attribute_is_refused(op: str, name: str) -> None:
    refused = change(f"/{name}", op)

    assert DEFAULT.classify(refused) is AttributeClass.SYSTEM
    assert DEFAULT.violations([refused]) == [
        Violation(0, op, f"/{name}", name, f"'{name}' is an IMS system attribute; {ONLY}")
    ]


@pytest.mark.parametrize(
    "name", sorted(set(GLANCE_PROTECTED_ATTRIBUTES) - set(IMS_SYSTEM_ATTRIBUTES))
)
def test_glance_only_names_are_refused_as_protected(name: str) -> None:
    (violation,) = DEFAULT.violations([change(f"/{name}")])

    assert violation.reason == f"'{name}' is a protected attribute; {ONLY}"


@pytest.mark.parametrize(
    ("pointer", "attribute", "prefix"),
    [
        ("/__foo", "__foo", "__"),
        ("/__", "__", "__"),
        ("/___x", "___x", "__"),
        ("/__Description", "__Description", "__"),
        ("/__description_x", "__description_x", "__"),
        ("/__support_kvm_x", "__support_kvm_x", "__"),
        ("/os_glance", "os_glance", "os_glance"),
        ("/os_glance_importing_to_stores", "os_glance_importing_to_stores", "os_glance"),
        ("/os_glancex", "os_glancex", "os_glance"),
        # Decoded names decide: escapes, whitespace and extra leading slashes.
        ("/ __foo ", "__foo", "__"),
        ("/\u00a0__foo\u2003", "__foo", "__"),
        ("//__foo", "__foo", "__"),
        ("/__os~0type", "__os~type", "__"),
        ("/__os~1type", "__os/type", "__"),
        ("/_\u005f", "__", "__"),
    ],
)
def test_reserved_prefixes_are_refused(pointer: str, attribute: str, prefix: str) -> None:
    refused = change(pointer)

    assert DEFAULT.classify(refused) is AttributeClass.SYSTEM
    assert DEFAULT.violations([refused]) == [
        Violation(
            0, "replace", pointer, attribute, f"'{attribute}' starts with the reserved prefix '{prefix}'"
        )
    ]


@pytest.mark.parametrize(
    ("pointer", "attribute"),
    [("/ id ", "id"), ("/\tstatus\n", "status"), ("//owner", "owner"), ("/\u0069d", "id"),
     ("/\x1fvisibility", "visibility")],
)  # fmt: skip
def test_names_are_decided_after_decoding(pointer: str, attribute: str) -> None:
    (violation,) = DEFAULT.violations([change(pointer)])

    assert (violation.pointer, violation.attribute) == (pointer, attribute)
    assert violation.reason == f"'{attribute}' is an IMS system attribute; {ONLY}"


@pytest.mark.parametrize(
    ("refused", "attribute"),
    [
        (deep("tags", "-"), "tags/-"),
        (deep("name", "x"), "name/x"),
        (deep("__description", "x", op="replace"), "__description/x"),
        (deep("custom", "x"), "custom/x"),
        (deep("a/b", "c"), "a/b/c"),
        (change("/locations/0", "add"), "locations/0"),
        (change("/locations/-", "add"), "locations/-"),
        (change("/locations/1", "remove"), "locations/1"),
    ],
)
def test_paths_deeper_than_one_token_are_refused(refused: Change, attribute: str) -> None:
    assert DEFAULT.classify(refused) is AttributeClass.SYSTEM
    assert DEFAULT.violations([refused]) == [
        Violation(
            0,
            refused.op,
            refused.pointer,
            attribute,
            f"'{attribute}' is not a single attribute: a path must name exactly one attribute",
        )
    ]


# -- what passes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "kind"),
    [
        ("/name", AttributeClass.NAME),
        ("/ name ", AttributeClass.NAME),
        ("/__description", AttributeClass.DESCRIPTION),
        ("/\u00a0__description", AttributeClass.DESCRIPTION),
        ("/my_attribute", AttributeClass.CUSTOM),
        ("/ID", AttributeClass.CUSTOM),
        ("/Name", AttributeClass.CUSTOM),
        ("/NAME", AttributeClass.CUSTOM),
        ("/Status", AttributeClass.CUSTOM),
        ("/_os_type", AttributeClass.CUSTOM),
        ("/os_type", AttributeClass.CUSTOM),
        ("/x__", AttributeClass.CUSTOM),
        ("/os_glanc", AttributeClass.CUSTOM),
        ("/OS_GLANCE_x", AttributeClass.CUSTOM),
        ("/\u200b__os_type", AttributeClass.CUSTOM),
        ("/names", AttributeClass.CUSTOM),
        ("/a~1b", AttributeClass.CUSTOM),
        ("/\u4e2d\u6587", AttributeClass.CUSTOM),
        ("/", AttributeClass.CUSTOM),
    ],
)
@pytest.mark.parametrize("op", OPS)
def test_allowed_attributes(op: str, pointer: str, kind: AttributeClass) -> None:
    allowed = change(pointer, op)

    assert DEFAULT.classify(allowed) is kind
    assert DEFAULT.violations([allowed]) == []


def test_violations_lists_every_offender_in_order() -> None:
    changes = [
        change("/name", "replace"),
        change("/__os_type", "replace"),
        change("/my_custom", "add"),
        change("/locations/0", "add"),
        change("/__description", "remove"),
        change("/__foo", "add"),
        change("/id", "remove"),
        deep("tags", "-"),
    ]

    assert DEFAULT.violations(changes) == [
        Violation(1, "replace", "/__os_type", "__os_type", f"'__os_type' is an IMS system attribute; {ONLY}"),
        Violation(3, "add", "/locations/0", "locations/0",
                  "'locations/0' is not a single attribute: a path must name exactly one attribute"),
        Violation(5, "add", "/__foo", "__foo", "'__foo' starts with the reserved prefix '__'"),
        Violation(6, "remove", "/id", "id", f"'id' is an IMS system attribute; {ONLY}"),
        Violation(7, "add", "/tags/-", "tags/-",
                  "'tags/-' is not a single attribute: a path must name exactly one attribute"),
    ]  # fmt: skip


def test_violations_of_nothing_and_of_a_generator() -> None:
    assert DEFAULT.violations([]) == []
    assert [v.index for v in DEFAULT.violations(change(p) for p in ["/a", "/id", "/b", "/__x"])] == [1, 3]


# -- configuration -----------------------------------------------------------------


def test_a_configured_system_attribute_may_be_allowed() -> None:
    policy = Policy(
        allowed_system_attributes=("name", "__description", "__support_kvm"),
        forbidden_attributes=[n for n in DEFAULT_FORBIDDEN_ATTRIBUTES if n != "__support_kvm"],
    )

    assert policy.classify(change("/__support_kvm")) is AttributeClass.CUSTOM
    assert policy.violations([change("/__support_kvm")]) == []
    (violation,) = policy.violations([change("/__support_xen")])
    assert violation.reason == (
        "'__support_xen' is an IMS system attribute; only name, __description, __support_kvm "
        "and customized attributes may be modified through this API"
    )
    assert DEFAULT.violations([change("/__support_kvm")]) != []


def test_allowed_names_win_over_forbidden_names_and_prefixes() -> None:
    policy = Policy(
        allowed_system_attributes=["name", "__description", "min_ram"],
        forbidden_attributes=["min_ram", "name"],
        forbidden_prefixes=["__", "min", "na"],
    )

    assert [policy.classify(change(p)) for p in ["/name", "/__description", "/min_ram", "/min_disk", "/nam"]] == [
        AttributeClass.NAME,
        AttributeClass.DESCRIPTION,
        AttributeClass.CUSTOM,
        AttributeClass.SYSTEM,
        AttributeClass.SYSTEM,
    ]


@pytest.mark.parametrize(
    ("options", "pointer", "kind"),
    [
        ({"forbidden_prefixes": ()}, "/__foo", AttributeClass.CUSTOM),
        ({"forbidden_prefixes": ()}, "/__os_type", AttributeClass.SYSTEM),
        ({"forbidden_prefixes": ["x_"]}, "/x_y", AttributeClass.SYSTEM),
        ({"forbidden_attributes": ()}, "/id", AttributeClass.CUSTOM),
        ({"forbidden_attributes": ()}, "/__os_type", AttributeClass.SYSTEM),
        ({"forbidden_attributes": ["Secret"]}, "/Secret", AttributeClass.SYSTEM),
        ({"forbidden_attributes": ["Secret"]}, "/secret", AttributeClass.CUSTOM),
        ({"allowed_system_attributes": ()}, "/name", AttributeClass.NAME),
        ({"allowed_system_attributes": ()}, "/__description", AttributeClass.SYSTEM),
        ({"allowed_system_attributes": ["name"], "forbidden_attributes": ["name"]}, "/name", AttributeClass.NAME),
        ({"allowed_system_attributes": [], "forbidden_attributes": ["name"]}, "/name", AttributeClass.SYSTEM),
    ],
)  # fmt: skip
def test_custom_configuration(options: dict[str, list[str]], pointer: str, kind: AttributeClass) -> None:
    policy = Policy(**options)  # type: ignore[arg-type]

    assert policy.classify(change(pointer)) is kind
    assert bool(policy.violations([change(pointer)])) is (kind is AttributeClass.SYSTEM)


def test_no_allowed_names_leaves_only_customized_attributes() -> None:
    policy = Policy(allowed_system_attributes=(), forbidden_attributes=["name"])

    (violation,) = policy.violations([change("/name")])

    assert violation.reason == (
        "'name' is an IMS system attribute; only customized attributes may be modified through this API"
    )


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"forbidden_prefixes": "__"}, TypeError, "forbidden_prefixes: expected a list of names"),
        ({"forbidden_attributes": "id"}, TypeError, "forbidden_attributes: expected a list"),
        ({"allowed_system_attributes": b"name"}, TypeError, "allowed_system_attributes: expected"),
        ({"forbidden_prefixes": ["__", ""]}, ValueError, "forbidden_prefixes: every entry must be a non-empty string, got ''"),
        ({"forbidden_attributes": ["id", 5]}, ValueError, "forbidden_attributes: every entry must be a non-empty string, got 5"),
        ({"allowed_system_attributes": [None]}, ValueError, "allowed_system_attributes: every entry"),
    ],
)  # fmt: skip
def test_bad_configuration_is_refused(options: dict[str, object], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        Policy(**options)  # type: ignore[arg-type]


def test_describe_is_one_line_with_the_counts() -> None:
    assert DEFAULT.describe() == (
        f"attribute policy: 2 allowed system attributes, {len(DEFAULT_FORBIDDEN_ATTRIBUTES)} "
        "forbidden attributes, 2 forbidden prefixes ('__', 'os_glance')"
    )
    assert Policy(forbidden_prefixes=[]).describe().endswith("0 forbidden prefixes (none)")


def test_policy_exposes_its_configuration() -> None:
    policy = Policy(forbidden_prefixes=["__", "x", "__"])

    assert policy.allowed_system_attributes == frozenset({"name", "__description"})
    assert policy.forbidden_attributes == frozenset(DEFAULT_FORBIDDEN_ATTRIBUTES)
    assert policy.forbidden_prefixes == ("__", "x")


def _shipped_and_default_policies() -> list[Policy]:
    from gateway import config
    from gateway.config.generation import Config

    shipped = config.load(REPO / "config" / "gateway.toml", environ={})
    return [DEFAULT, Config.from_settings(shipped).policy, Config.from_settings(config.build({})).policy]


@pytest.mark.parametrize("policy", _shipped_and_default_policies(), ids=["Policy()", "config/gateway.toml", "built-in defaults"])
@pytest.mark.parametrize(
    "pointer", ["/protected", "/os_glance_import_task", "/os_glance", "/__os_type", "/__anything", "/visibility", "/min_ram"]
)
def test_what_glance_protects_and_ims_owns_is_refused_by_every_shipped_policy(policy: Policy, pointer: str) -> None:
    assert [violation.attribute for violation in policy.violations([change(pointer)])] == [pointer[1:]]


@pytest.mark.parametrize("policy", _shipped_and_default_policies(), ids=["Policy()", "config/gateway.toml", "built-in defaults"])
def test_what_a_user_may_change_passes_every_shipped_policy(policy: Policy) -> None:
    assert policy.violations([change("/name"), change("/__description"), change("/team", "add"), change("/os_distro")]) == []
