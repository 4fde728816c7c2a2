"""Keeping the meaning of v2.0 ``add`` when its body is rewritten to v2.1.

In the v2.0 shape ``add`` of an attribute that exists is a 409, and so is a second ``add``
of the same new attribute; in v2.1 ``add`` acts as replace. A plain rewrite would turn
those conflicts into silent overwrites, so the gateway replays the changes against the
image's current attributes and answers 409 where Glance would.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from gateway.patch import Change


def needs_check(changes: Iterable[Change]) -> bool:
    return any(change.op == "add" for change in changes)


def first_add_conflict(
    changes: Iterable[Change], existing: Collection[str], unremovable: Collection[str]
) -> str | None:
    """Glance's message for the first v2.0 ``add`` that conflicts, or None.

    The replay stops at the first change the upstream would refuse for another reason
    (replace or remove of a missing attribute, remove of a base attribute): the upstream
    answers that one first, exactly as Glance applies changes in order.
    """
    present = set(existing)
    for change in changes:
        name = change.attribute
        if change.op == "add":
            if name in present:
                return f"Property {name} already present."
            present.add(name)
        elif change.op == "replace":
            if name not in present:
                return None
        elif name not in present or name in unremovable:
            return None
        else:
            present.discard(name)
    return None
