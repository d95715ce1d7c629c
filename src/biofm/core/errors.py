"""Errors raised by biofm. Every message states what is wrong and how to fix it."""

from __future__ import annotations


class BiofmError(Exception):
    """Base class of all biofm errors."""


class BadInputError(BiofmError, ValueError):
    """Input the user can fix: the message names the problem and the fix.

    ``where`` (a path, a row, a key) is prefixed to the message when given.
    """

    def __init__(self, problem: str, fix: str, where: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{problem}. Fix: {fix}")


class BadSampleError(BadInputError):
    """One sample (image, field, crop) cannot be used; training skips and counts these."""


class UnsupportedFormatError(BadInputError):
    """A file whose format biofm does not read."""


class ConfigError(BadInputError):
    """A configuration key or value that is not accepted."""


class MissingExtraError(BiofmError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the optional package '{package}'. "
            f"Fix: pip install 'biofm[{extra}]'"
        )
