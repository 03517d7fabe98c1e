"""Turn the library's expected errors into one clear line and exit code 2, not a traceback."""

from __future__ import annotations

import functools
import sys

import typer

from vladva.errors import UserError


def friendly_errors(fn):
    """Decorator for CLI commands: known input errors print `error: ...` and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vladva.data.images import ImageLoadError
        from vladva.data.manifest import ManifestError

        try:
            return fn(*args, **kwargs)
        except (UserError, ManifestError, ImageLoadError, FileNotFoundError, KeyError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            print(f"error: {msg}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper
