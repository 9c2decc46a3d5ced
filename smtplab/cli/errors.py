"""How the CLI fails: one line on stderr, never a traceback (exit status 2)."""

from __future__ import annotations

from smtplab.errors import SmtplabError


class CLIError(SmtplabError):
    """A problem to report in one line, without a traceback (exit status 2)."""


def one_line(text: str) -> str:
    """``text`` with what a terminal would not show as text escaped (line breaks, control
    characters, lone surrogates from undecodable argv bytes): an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
