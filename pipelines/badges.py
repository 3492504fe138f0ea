"""Shields-style SVG status badges ("pipeline | passing")."""

from __future__ import annotations

from django.utils.html import escape

# (message, colour) per run status; the colours match shields.io's palette.
STATUSES = {
    "success": ("passing", "#2da44e"),
    "failed": ("failed", "#cf222e"),
    "running": ("running", "#0969da"),
    "pending": ("pending", "#bf8700"),
    "created": ("pending", "#bf8700"),
    "canceled": ("canceled", "#6e7781"),
    "skipped": ("skipped", "#6e7781"),
    None: ("none", "#9f9f9f"),
}

# Verdana 11px advance widths, roughly, for the characters a badge uses.
_NARROW = set("fijlrt.,:;!|' ")
_WIDE = set("mwMW@%")


def text_width(text: str) -> int:
    """Return an estimate of TEXT's width in pixels at 11px Verdana."""
    width = 0.0
    for char in text:
        if char in _NARROW:
            width += 4.0
        elif char in _WIDE:
            width += 10.0
        elif char.isupper() or char.isdigit():
            width += 7.5
        else:
            width += 6.6
    return int(round(width))


def status_of(status: str | None) -> tuple[str, str]:
    """Return the (message, colour) a badge shows for a run STATUS."""
    return STATUSES.get(status, STATUSES[None])


def render(label: str, status: tuple[str, str]) -> str:
    """Return the SVG of a two-part badge: LABEL on grey, the message on its colour."""
    message, colour = status
    lw = text_width(label) + 12
    mw = text_width(message) + 12
    total = lw + mw
    label_e, message_e = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" '
        f'role="img" aria-label="{label_e}: {message_e}">'
        f"<title>{label_e}: {message_e}</title>"
        '<linearGradient id="s" x2="0" y2="100%">'
        '<stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/>'
        "</clipPath>"
        '<g clip-path="url(#r)">'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{label_e}</text>'
        f'<text x="{lw / 2:.1f}" y="14">{label_e}</text>'
        f'<text x="{lw + mw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">'
        f"{message_e}</text>"
        f'<text x="{lw + mw / 2:.1f}" y="14">{message_e}</text></g></svg>'
    )
