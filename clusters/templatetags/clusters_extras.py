"""Formatting for cluster pages: CPU in cores, memory in binary units, status words."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def cpu(millicores: Any) -> str:
    """Format millicores: ``250m``, ``1.5``."""
    if millicores is None or millicores == "":
        return "—"
    m = int(millicores)
    return f"{m}m" if m < 1000 else f"{m / 1000:.3g}"


@register.filter
def mem(value: Any) -> str:
    """Format bytes: ``512Mi``, ``7.8Gi``."""
    if value is None or value == "":
        return "—"
    n = float(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if n < 1024 or unit == "Ti":
            return f"{n:.0f}{unit}" if unit in ("", "Ki") else f"{n:.3g}{unit}"
        n /= 1024
    return str(value)


@register.filter
def pct(part: Any, whole: Any) -> int:
    """Return PART as a whole percentage of WHOLE (0 when WHOLE is 0)."""
    try:
        return round(100 * float(part) / float(whole)) if float(whole) else 0
    except (TypeError, ValueError):
        return 0


_STATUS = {
    "Running": "running",
    "Succeeded": "success",
    "Ready": "success",
    "Bound": "success",
    "Available": "success",
    "Normal": "success",
    "Pending": "pending",
    "ContainerCreating": "pending",
    "Failed": "failed",
    "NotReady": "failed",
    "Warning": "warning",
    "Terminating": "canceled",
    "Unknown": "created",
    "Released": "skipped",
    "Lost": "failed",
    "CrashLoopBackOff": "failed",
    "ImagePullBackOff": "failed",
    "ErrImagePull": "failed",
    "OOMKilled": "failed",
    "Error": "failed",
    "Cordoned": "warning",
}


@register.filter
def status_class(word: Any) -> str:
    """Map a Kubernetes status word to one of the stylesheet's status-* names."""
    return _STATUS.get(str(word), "created")


@register.filter
def get(mapping: Any, key: Any) -> Any:
    """Return MAPPING[KEY] (or None)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
