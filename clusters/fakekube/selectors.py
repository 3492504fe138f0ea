"""labelSelector / fieldSelector parsing and matching (the string forms used in queries)."""

from __future__ import annotations

import re
from collections.abc import Callable


class SelectorError(ValueError):
    pass


_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\((.*?)\))?\s*$")


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(s: str | None) -> Callable[[dict], bool]:
    """Kubernetes label selector: a=b, a==b, a!=b, a in (x,y), a notin (x), a, !a."""
    if not s:
        return lambda labels: True
    reqs: list[Callable[[dict], bool]] = []
    for raw in _split_top(s):
        term = raw.strip()
        if not term:
            continue
        m = re.match(r"^([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)$", term)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=val: lb.get(k) == v)
            continue
        m = _SET_RE.match(term)
        if not m:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        neg, key, op, vals = m.groups()
        if op:
            values = {v.strip() for v in vals.split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif neg:
            reqs.append(lambda lb, k=key: k not in lb)
        else:
            reqs.append(lambda lb, k=key: k in lb)
    return lambda labels: all(r(labels or {}) for r in reqs)


def field_value(obj: dict, path: str):
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def parse_field_selector(s: str | None, allowed: set[str]) -> Callable[[dict], bool]:
    """metadata.name / metadata.namespace always; others per resource. Raises
    SelectorError('field label not supported: X') like the API server."""
    if not s:
        return lambda obj: True
    reqs = []
    for term in s.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", term)
        if not m:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{term}'")
        key, op, val = m.groups()
        if key not in allowed and key not in ("metadata.name", "metadata.namespace"):
            raise SelectorError(f"field label not supported: {key}")

        def get(obj, key=key):
            v = field_value(obj, key)
            if v is None:
                return ""
            if isinstance(v, bool):
                return "true" if v else "false"
            return str(v)

        if op == "!=":
            reqs.append(lambda o, g=get, v=val: g(o) != v)
        else:
            reqs.append(lambda o, g=get, v=val: g(o) == v)
    return lambda obj: all(r(obj) for r in reqs)
