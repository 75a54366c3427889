"""User-facing errors: one screen, naming the file or option and what was expected."""

from __future__ import annotations


class BenchError(Exception):
    """An error the user can act on. The CLI prints it without a traceback (unless --debug)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class TaskDefinitionError(BenchError):
    """A task file is malformed (unknown field, duplicate name, bad value)."""


class DataMissingError(BenchError):
    """A task's data is not on disk; the message says where to get it."""


class AudioReadError(BenchError):
    """An audio file could not be decoded; the message names the file."""


class DependencyError(BenchError):
    """An optional dependency or system tool is missing; the message says how to install it."""
