#!/usr/bin/env python
"""Django's command-line utility for Slipway."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.env import SettingError

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except SettingError as exc:
        # A bad setting is an operator's mistake, not a bug: one clear line, no traceback.
        print(f"slipway: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
