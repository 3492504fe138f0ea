"""managedFields bookkeeping and server-side apply.

Field sets are handled as Python sets of *paths*; a path is a tuple of FieldsV1 path
elements (``"f:spec"``, ``'k:{"name":"app"}'``, ``"."``). They convert to and from the
nested ``fieldsV1`` dictionaries the API server returns.

This is a pragmatic model of structured-merge-diff, precise for the common cases:
leaf fields, maps, lists keyed by a merge key (containers by name, ports by
containerPort+protocol, conditions by type ...), atomic label selectors and atomic
lists.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .patch import merge_key_for

# Maps/lists that never get a "." (self) entry: non-pointer structs and required lists.
_NO_DOT = {
    "metadata",
    "spec",
    "template",
    "strategy",
    "status",
    "containers",
    "scaleTargetRef",
}
_TRACKED_META = (
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "generateName",
)
_SKIP_TOP = {"apiVersion", "kind", "metadata", "status"}

Path = tuple[str, ...]


def _key_elem(parent: str | None, field: str, item: dict, mk: str) -> str:
    key = {mk: item.get(mk)}
    if field == "ports" and "protocol" in item:
        key["protocol"] = item["protocol"]
    return "k:" + json.dumps(key, sort_keys=True, separators=(",", ":"))


def _is_atomic(field: str, value: Any) -> bool:
    if field == "selector" and isinstance(value, dict):
        return "matchLabels" in value or "matchExpressions" in value
    return False


def _walk(
    value: Any,
    prefix: Path,
    field: str | None,
    parent: str | None,
    dots: bool,
    out: dict[Path, Any],
) -> None:
    if isinstance(value, dict):
        if not value or (field is not None and _is_atomic(field, value)):
            out[prefix] = value
            return
        if dots and prefix and field not in _NO_DOT:
            out[prefix + (".",)] = True
        for k, v in value.items():
            _walk(v, prefix + ("f:" + k,), k, field, dots, out)
        return
    if isinstance(value, list) and field is not None:
        mk = merge_key_for(parent, field)
        if mk and value and all(isinstance(i, dict) and mk in i for i in value):
            if dots and field not in _NO_DOT:
                out[prefix + (".",)] = True
            for item in value:
                kp = prefix + (_key_elem(parent, field, item, mk),)
                out[kp + (".",)] = True
                for k, v in item.items():
                    _walk(v, kp + ("f:" + k,), k, field, dots, out)
            return
        if field == "finalizers" and value:
            if dots:
                out[prefix + (".",)] = True
            for v in value:
                out[prefix + ("v:" + json.dumps(v),)] = True
            return
    out[prefix] = value


def leaf_values(obj: dict, subresource: str | None = None, apply: bool = False) -> dict:
    """Path -> value for every tracked field of ``obj``."""
    out: dict[Path, Any] = {}
    dots = not apply
    if subresource == "status":
        if "status" in obj:
            _walk(obj["status"], ("f:status",), "status", None, dots, out)
        return out
    meta = obj.get("metadata") or {}
    for k in _TRACKED_META:
        if k in meta and meta[k] not in (None, "", {}, []):
            _walk(meta[k], ("f:metadata", "f:" + k), k, "metadata", dots, out)
    for k, v in obj.items():
        if k in _SKIP_TOP:
            continue
        _walk(v, ("f:" + k,), k, None, dots, out)
    return out


def to_fields_v1(paths) -> dict:
    root: dict = {}
    for p in sorted(paths):
        node = root
        for el in p:
            node = node.setdefault(el, {})
    return _sort(root)


def _sort(d: dict) -> dict:
    return {k: _sort(v) for k, v in sorted(d.items())}


def from_fields_v1(fv1: dict) -> set[Path]:
    out: set[Path] = set()

    def rec(node: dict, prefix: Path) -> None:
        if not node:
            if prefix:
                out.add(prefix)
            return
        for k, v in node.items():
            if k == ".":
                out.add(prefix + (".",))
            else:
                rec(v, prefix + (k,))

    rec(fv1 or {}, ())
    return out


def path_string(p: Path) -> str:
    """Render a path the way structured-merge-diff does: .spec.containers[name="app"].image"""
    s = ""
    for el in p:
        if el == ".":
            continue
        if el.startswith("f:"):
            s += "." + el[2:]
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
        elif el.startswith("v:"):
            s += "[=" + el[2:] + "]"
        elif el.startswith("i:"):
            s += "[" + el[2:] + "]"
    return s


def _entry_key(e: dict) -> tuple:
    return (e.get("manager"), e.get("operation"), e.get("subresource", ""))


def record_update(
    old: dict | None,
    new: dict,
    manager: str,
    api_version: str,
    now: str,
    subresource: str | None = None,
    operation: str = "Update",
) -> None:
    """Update ``new.metadata.managedFields`` for a non-apply write by ``manager``."""
    sub = "status" if subresource == "status" else None
    old_vals = leaf_values(old, sub) if old else {}
    new_vals = leaf_values(new, sub)
    changed = {p for p, v in new_vals.items() if p not in old_vals or old_vals[p] != v}
    removed = set(old_vals) - set(new_vals)
    entries = copy.deepcopy((old or {}).get("metadata", {}).get("managedFields") or [])
    entries = [e for e in entries if e.get("fieldsType", "FieldsV1") == "FieldsV1"]
    mine_key = (manager, operation, subresource or "")
    mine = None
    result = []
    for e in entries:
        paths = from_fields_v1(e.get("fieldsV1") or {})
        paths -= removed
        if _entry_key(e) == mine_key:
            mine = paths
            continue
        paths -= changed
        # drop "." entries whose children are all gone
        paths = _prune(paths)
        if paths:
            e["fieldsV1"] = to_fields_v1(paths)
            result.append(e)
    if mine is None:
        mine = set()
    mine |= changed
    mine = _prune(mine)
    if mine:
        entry = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(mine),
        }
        if subresource:
            entry["subresource"] = subresource
        result.append(entry)
    new.setdefault("metadata", {})["managedFields"] = _order(result)
    if not new["metadata"]["managedFields"]:
        del new["metadata"]["managedFields"]


def _prune(paths: set[Path]) -> set[Path]:
    return set(paths)


def _order(entries: list[dict]) -> list[dict]:
    # The API server keeps Apply entries first, then Update entries, each by time.
    applies = [e for e in entries if e.get("operation") == "Apply"]
    updates = [e for e in entries if e.get("operation") != "Apply"]
    return applies + updates


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[Path, str]]):
        self.conflicts = conflicts
        super().__init__(format_conflicts(conflicts))


def _print_manager(entry: dict) -> str:
    if entry.get("operation") == "Update":
        return f'"{entry["manager"]}" using {entry.get("apiVersion", "")}'
    return f'"{entry["manager"]}"'


def format_conflicts(conflicts: list[tuple[Path, str]]) -> str:
    n = len(conflicts)
    if n == 1:
        p, m = conflicts[0]
        body = f"conflict with {m}: {path_string(p)}"
    else:
        by: dict[str, list[Path]] = {}
        for p, m in conflicts:
            by.setdefault(m, []).append(p)
        lines = []
        for m in sorted(by):
            lines.append(f"conflicts with {m}:")
            lines.extend(f"- {path_string(p)}" for p in by[m])
        body = "\n".join(lines)
    return f"Apply failed with {n} conflict{'s' if n != 1 else ''}: {body}"


def _get_path(obj: Any, p: Path) -> tuple[bool, Any]:
    node = obj
    for el in p:
        if el == ".":
            return True, node
        if el.startswith("f:"):
            if not isinstance(node, dict) or el[2:] not in node:
                return False, None
            node = node[el[2:]]
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            if not isinstance(node, list):
                return False, None
            node = next(
                (
                    i
                    for i in node
                    if isinstance(i, dict)
                    and all(i.get(k) == v for k, v in key.items())
                ),
                None,
            )
            if node is None:
                return False, None
        else:
            return False, None
    return True, node


def _delete_path(obj: Any, p: Path) -> None:
    p = tuple(el for el in p if el != ".")
    if not p:
        return
    ok, parent = _get_path(obj, p[:-1])
    if not ok:
        return
    last = p[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        key = json.loads(last[2:])
        parent[:] = [
            i
            for i in parent
            if not (isinstance(i, dict) and all(i.get(k) == v for k, v in key.items()))
        ]


def _apply_merge(live: Any, cfg: Any, field: str | None, parent: str | None) -> Any:
    if isinstance(cfg, dict) and isinstance(live, dict):
        if field is not None and _is_atomic(field, cfg):
            return copy.deepcopy(cfg)
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            out[k] = _apply_merge(live.get(k), v, k, field)
        return out
    if isinstance(cfg, list) and isinstance(live, list) and field is not None:
        mk = merge_key_for(parent, field)
        if mk and all(isinstance(i, dict) and mk in i for i in cfg):
            out = copy.deepcopy(live)
            for item in cfg:
                idx = next(
                    (
                        n
                        for n, e in enumerate(out)
                        if isinstance(e, dict) and e.get(mk) == item.get(mk)
                    ),
                    None,
                )
                if idx is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[idx] = _apply_merge(out[idx], item, field, parent)
            return out
    return copy.deepcopy(cfg)


def server_side_apply(
    live: dict | None,
    config: dict,
    manager: str,
    api_version: str,
    now: str,
    force: bool,
    subresource: str | None = None,
) -> dict:
    """Return the new object (before defaulting) or raise ApplyConflict."""
    sub = "status" if subresource == "status" else None
    applied = {p: v for p, v in leaf_values(config, sub, apply=True).items()}
    live = live or {}
    live_vals = leaf_values(live, sub)
    entries = copy.deepcopy(live.get("metadata", {}).get("managedFields") or [])
    mine_key = (manager, "Apply", subresource or "")
    conflicts: list[tuple[Path, str]] = []
    conflict_paths: set[Path] = set()
    prev_mine: set[Path] = set()
    for e in entries:
        paths = from_fields_v1(e.get("fieldsV1") or {})
        if _entry_key(e) == mine_key:
            prev_mine = paths
            continue
        for p, v in applied.items():
            if p[-1] == "." or p not in paths:
                continue
            if p in live_vals and live_vals[p] != v:
                conflicts.append((p, _print_manager(e)))
                conflict_paths.add(p)
    if conflicts and not force:
        conflicts.sort(key=lambda c: (c[1], c[0]))
        raise ApplyConflict(conflicts)
    new = _apply_merge(live, config, None, None) if live else copy.deepcopy(config)
    if live:
        new["metadata"] = copy.deepcopy(live.get("metadata", {}))
        cmeta = config.get("metadata") or {}
        for k in _TRACKED_META:
            if k in cmeta:
                new["metadata"][k] = _apply_merge(
                    new["metadata"].get(k), cmeta[k], k, "metadata"
                )
    # Fields this manager applied before but no longer does, and nobody else owns.
    others: set[Path] = set()
    for e in entries:
        if _entry_key(e) != mine_key:
            others |= from_fields_v1(e.get("fieldsV1") or {})
    for p in sorted(prev_mine - set(applied) - others, key=len, reverse=True):
        if p[-1] != ".":
            _delete_path(new, p)
    result = []
    for e in entries:
        if _entry_key(e) == mine_key:
            continue
        paths = from_fields_v1(e.get("fieldsV1") or {}) - conflict_paths
        if paths:
            e["fieldsV1"] = to_fields_v1(paths)
            result.append(e)
    entry = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(set(applied)),
    }
    if subresource:
        entry["subresource"] = subresource
    result.insert(0, entry)
    new.setdefault("metadata", {})["managedFields"] = _order(result)
    return new
