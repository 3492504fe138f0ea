"""Patch algorithms used by the fake API server.

* JSON merge patch (RFC 7386): maps merge recursively, ``null`` deletes, lists replaced.
* Strategic merge patch: like merge patch, but lists of objects that Kubernetes marks
  with a ``patchMergeKey`` (containers, env, ports, volumes, conditions ...) are merged
  element by element on that key; ``$patch: delete`` / ``$patch: replace`` directives and
  ``$setElementOrder/...`` / ``$deleteFromPrimitiveList/...`` are understood.
* JSON Patch (RFC 6902) with ``test``.

All functions are pure: they return new values and never mutate their inputs.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied (maps to 422 Invalid with empty details)."""


class PatchDecodeError(Exception):
    """A patch body that does not decode as its declared type (400 BadRequest)."""


# --------------------------------------------------------------------------- merge


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------- strategic merge

# (parent field, field) -> merge key; parent None matches any parent.
_MERGE_KEYS: dict[tuple[str | None, str], str] = {
    (None, "containers"): "name",
    (None, "initContainers"): "name",
    (None, "ephemeralContainers"): "name",
    (None, "env"): "name",
    (None, "volumes"): "name",
    (None, "volumeMounts"): "mountPath",
    (None, "volumeDevices"): "devicePath",
    (None, "imagePullSecrets"): "name",
    (None, "conditions"): "type",
    (None, "hostAliases"): "ip",
    (None, "ownerReferences"): "uid",
    (None, "topologySpreadConstraints"): "topologyKey",
    (None, "resourceClaims"): "name",
    (None, "schedulingGates"): "name",
    (None, "addresses"): "type",
    (None, "taints"): "key",
    (None, "podIPs"): "ip",
    (None, "hostIPs"): "ip",
    (None, "containerStatuses"): "name",
    (None, "initContainerStatuses"): "name",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("ephemeralContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",  # Service ports
}
# Primitive lists with patchStrategy=merge (union).
_MERGE_PRIMITIVE = {"finalizers"}


def merge_key_for(parent: str | None, field: str) -> str | None:
    return _MERGE_KEYS.get((parent, field)) or _MERGE_KEYS.get((None, field))


def strategic_merge_patch(target: Any, patch: Any, parent: str | None = None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    # $deleteFromPrimitiveList/<field>: [values]
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder, $retainKeys, $deleteFromPrimitiveList
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, list):
            mk = merge_key_for(parent, key)
            if mk and isinstance(current, list):
                result[key] = _merge_list(current, value, mk, key)
            elif key in _MERGE_PRIMITIVE and isinstance(current, list):
                merged = list(current)
                for v in value:
                    if v not in merged:
                        merged.append(v)
                result[key] = merged
            elif mk:
                result[key] = [
                    strategic_merge_patch(None, v, key) if isinstance(v, dict) else v
                    for v in value
                    if not (isinstance(v, dict) and v.get("$patch") == "delete")
                ]
            else:
                result[key] = copy.deepcopy(value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(current, value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(current: list, patch: list, mk: str, field: str) -> list:
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {field} must contain objects with key {mk}")
        if item.get("$patch") == "replace":
            return [
                {k: v for k, v in i.items() if k != "$patch"}
                for i in patch
                if isinstance(i, dict)
            ]
        key = item.get(mk)
        idx = next(
            (
                i
                for i, e in enumerate(result)
                if isinstance(e, dict) and e.get(mk) == key
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(strategic_merge_patch(None, item, field))
        else:
            result[idx] = strategic_merge_patch(result[idx], item, field)
    return result


# ------------------------------------------------------------------ JSON Patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    node = doc
    for tok in tokens[:-1]:
        node = _child(node, tok)
    return node, tokens[-1]


def _child(node: Any, tok: str) -> Any:
    if isinstance(node, dict):
        if tok not in node:
            raise PatchError(f"missing key {tok!r}")
        return node[tok]
    if isinstance(node, list):
        try:
            i = int(tok)
        except ValueError as e:
            raise PatchError(f"invalid index {tok!r}") from e
        if not 0 <= i < len(node):
            raise PatchError(f"index {i} out of range")
        return node[i]
    raise PatchError(f"cannot descend into {type(node).__name__}")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for tok in _split(path):
        node = _child(node, tok)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _split(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        else:
            try:
                i = int(last)
            except ValueError as e:
                raise PatchError(f"invalid index {last!r}") from e
            if not 0 <= i <= len(parent):
                raise PatchError(f"index {i} out of range")
            parent.insert(i, copy.deepcopy(value))
    else:
        raise PatchError("add target is not a container")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _split(path)
    if not tokens:
        raise PatchError("cannot remove the root")
    parent, last = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"missing key {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            i = int(last)
        except ValueError as e:
            raise PatchError(f"invalid index {last!r}") from e
        if not 0 <= i < len(parent):
            raise PatchError(f"index {i} out of range")
        return doc, parent.pop(i)
    raise PatchError("remove target is not a container")


def json_patch(doc: Any, ops: list) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid operation")
        kind = op["op"]
        path = op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            doc, _ = _remove(doc, path) if _split(path) else (doc, None)
            doc = _add(doc, path, op.get("value"))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, op["from"]))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError("testing value failed")
        else:
            raise PatchError(f"unexpected op {kind!r}")
    return doc
