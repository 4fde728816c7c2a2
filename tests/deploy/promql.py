"""Every PromQL expression the deploy kit ships, read from its files and made concrete."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.telemetry.families import FAMILIES, Kind

# Grafana's range variables, as concrete ranges for a Prometheus that scrapes every second.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_SELECTOR = re.compile(r"(?<![\w:])((?:[a-z_]+:)?ims_gateway[\w:]*|up(?![\w:]))(?:\{([^}]*)\})?")


# Every series name /metrics can show, from the gateway's own table of families.
EXPORTED = frozenset(
    name
    for family in FAMILIES
    for name in (
        [f"{family.full_name}_{suffix}" for suffix in ("bucket", "sum", "count")] if family.kind is Kind.HISTOGRAM else [family.full_name]
    )
)


def metric_names(expr: str) -> set[str]:
    """The gateway's series names ``expr`` reads, recorded ones (job:ims_gateway_...:rate5m) included, and ``up``."""
    return {token for token in re.findall(r"[A-Za-z_:][\w:]*", expr) if "ims_gateway" in token or token == "up"}


@dataclass(frozen=True)
class Expression:
    where: str
    expr: str


def concrete(expr: str, **variables: str) -> str:
    """``expr`` with Grafana's range variables and the dashboard ``variables`` given (job, namespace)
    replaced; ValueError names any other."""
    known = {**GRAFANA_VARIABLES, **variables}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return known[name]

    return _VARIABLE.sub(value, expr)


def selectors(expr: str) -> list[tuple[str, str]]:
    """(series name, its label matchers between the braces, or "") for every series ``expr`` reads."""
    return [(match.group(1), match.group(2) or "") for match in _SELECTOR.finditer(expr)]


def dashboard_expressions(node: Any, title: str = "") -> Iterator[Expression]:
    """Every ``expr`` anywhere in a dashboard (panels, rows' nested panels, variables), by panel title."""
    if isinstance(node, dict):
        title = node.get("title", title) if isinstance(node.get("title"), str) else title
        if isinstance(node.get("expr"), str):
            yield Expression(f"{title} [{node.get('refId', '?')}]", node["expr"])
        for value in node.values():
            yield from dashboard_expressions(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item, title)


def rule_expressions(paths: list[Path], kind: str) -> list[Expression]:
    """The expression of every ``kind`` rule (``record`` or ``alert``) in the rule files."""
    found = []
    for path in paths:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [Expression(rule[kind], rule["expr"]) for rule in group["rules"] if kind in rule]
    return found
