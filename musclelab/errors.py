"""Errors a user causes (bad config, bad data, impossible settings), reported without a stack trace.

``ConfigError`` carries a message that names the file or config field and the fix; the CLI prints it and
exits with status 2. Anything else is a bug or a runtime failure and keeps its traceback.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A problem with what the user asked for; the message says where and how to fix it."""
