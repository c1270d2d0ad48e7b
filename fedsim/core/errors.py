"""Errors that reach the user as one clear paragraph, never as a traceback.

Every error raised for bad input derives from :class:`FedsimError`; the CLI prints its
message and exits with status 2. Failures *during* a simulation (a device running out of
memory, dropping out, missing the deadline) are not errors at all: they are outcomes in
the run records.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FedsimError", "ConfigError", "format_value"]


class FedsimError(Exception):
    """Base of the user-facing errors: ``str(err)`` is the whole message."""


class ConfigError(FedsimError):
    """A scenario or profile file is malformed or holds an impossible value.

    Args:
        file: The file the bad value came from (or ``None`` for values given on the
            command line or in code).
        problems: One entry per problem: ``(dotted_path, line, value, expected)``.
            ``line`` is 1-based, or ``None`` when unknown.
    """

    def __init__(
        self,
        file: str | Path | None,
        problems: list[tuple[str, int | None, object, str]],
    ) -> None:
        self.file = str(file) if file is not None else None
        self.problems = problems
        super().__init__(self._render())

    def __reduce__(self):
        # Rebuilt from its parts, so that it crosses process boundaries (a worker of
        # a process pool or of Ray raises it; the parent re-raises or reports it).
        return (type(self), (self.file, self.problems))

    def _render(self) -> str:
        where = _printable(self.file or "<configuration>")
        parts = []
        for path, line, value, expected in self.problems:
            at = f"line {line}, " if line else ""
            shown = "" if value is _MISSING else f" = {format_value(value)}"
            parts.append(f"{at}'{_printable(path) or '<top level>'}'{shown}: {_printable(expected)}")
        noun = "problem" if len(parts) == 1 else f"{len(parts)} problems"
        return f"Invalid {where} ({noun}): " + "; ".join(parts) + "."


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"

    def __reduce__(self) -> str:
        return "_MISSING"  # unpickles as this module's one instance


_MISSING = _Missing()
ConfigError.MISSING = _MISSING


def format_value(value: object, limit: int = 60) -> str:
    """A short printable form of a user-supplied value."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more than 4300 digits has no repr
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    """``text`` on one line: a newline or other control character in a key or file name
    is shown escaped, so the message stays one paragraph."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
