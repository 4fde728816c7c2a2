"""Which client sent a request, as a metrics label drawn from a bounded set.

A User-Agent is client-controlled and unbounded, so it is never a label itself: the
label is its first product token (``python-glanceclient/4.1 keystoneauth1/5.0`` ->
``python-glanceclient``) or the label of the first configured rule whose substring it
contains, reduced to a safe charset. A token too long to be a product name, or with a
run of hex digits or digits such as an image id or a token has, is ``other``: the
User-Agent is the client's to fill. Only the first ``cap`` distinct product tokens become
labels; later ones are ``other``. Configured labels are always admitted: the operator
bounded them already.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

OTHER: Final = "other"
UNKNOWN: Final = "unknown"  # no User-Agent, or nothing usable in it
MAX_LABEL_LENGTH: Final = 48
KNOWN_USER_AGENTS: Final = 4096  # distinct User-Agents whose label is remembered

LABEL_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
_PRODUCT: Final = re.compile(r"\s*([^/\s(;,]+)")
_UNSAFE: Final = re.compile(r"[^a-z0-9._-]+")
_ID_LIKE: Final = re.compile(r"[0-9a-f]{8,}|[0-9]{6,}")
_RESERVED: Final = frozenset({OTHER, UNKNOWN})


@dataclass(frozen=True, slots=True)
class Rule:
    """A User-Agent containing ``substring`` (in any letter case) is labelled ``label``."""

    substring: str
    label: str


def parse_rule(text: str) -> Rule:
    """``"substring=label"``; the label is the part after the last ``=``."""
    substring, sep, label = text.rpartition("=")
    if not sep or not substring.strip():
        raise ValueError(f"{text!r} is not SUBSTRING=LABEL (e.g. terraform-provider-huaweicloud=terraform)")
    if not LABEL_PATTERN.fullmatch(label):
        raise ValueError(
            f"in {text!r} the label is not 1-{MAX_LABEL_LENGTH} of a-z 0-9 . _ - starting with a letter or digit"
        )
    return Rule(substring.strip().lower(), label)


def product_label(user_agent: str) -> str:
    """The User-Agent's first product token, lowercased and reduced to a-z 0-9 . _ -."""
    match = _PRODUCT.match(user_agent)
    if match is None:
        return UNKNOWN
    label = _UNSAFE.sub("_", match.group(1).lower()).strip("._-")
    if not label:
        return UNKNOWN
    if len(label) > MAX_LABEL_LENGTH or _ID_LIKE.search(label):
        return OTHER
    return label


class ClientLabels:
    """User-Agent -> label, with the set of labels bounded for the life of the process."""

    __slots__ = ("_admitted", "_known", "cap", "rules")

    def __init__(self, rules: Iterable[Rule] = (), cap: int = 50) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.cap = cap
        self._admitted: set[str] = set()
        # User-Agent -> label: a client sends the same one on every call (per request).
        self._known: dict[str, str] = {}

    def label(self, user_agent: str | None) -> str:
        if not user_agent:
            return UNKNOWN
        known = self._known.get(user_agent)
        if known is None:
            if len(self._known) >= KNOWN_USER_AGENTS:
                self._known.clear()
            known = self._known[user_agent] = self._label(user_agent)
        return known

    def _label(self, user_agent: str) -> str:
        if self.rules:
            lowered = user_agent.lower()
            for rule in self.rules:
                if rule.substring in lowered:
                    return rule.label
        label = product_label(user_agent)
        if label in self._admitted or label in _RESERVED:
            return label
        if len(self._admitted) >= self.cap:
            return OTHER
        self._admitted.add(label)
        return label

    def reconfigure(self, rules: Iterable[Rule], cap: int) -> None:
        """New rules and cap (a config reload); labels already admitted stay admitted."""
        self.rules = tuple(rules)
        self.cap = cap
        self._known.clear()


__all__ = ["OTHER", "UNKNOWN", "ClientLabels", "Rule", "parse_rule", "product_label"]
