"""Slipway's benchmark and fault suite: `python -m bench` (see docs/performance.md)."""
