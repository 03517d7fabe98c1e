"""Errors that mean "the user's input is wrong": the CLI prints their message as one line and exits 2.

Library code raises these (or `ValueError` / `FileNotFoundError` subclasses with a message naming the
file, line or key at fault); `vladva.cli.errors.friendly_errors` turns them into `error: ...`.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, config, flag) with a message that says what to fix."""


__all__ = ["UserError"]
