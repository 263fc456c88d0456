"""Messages for people: error text as one clean line, the way the CLI prints it."""

from __future__ import annotations

import re

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: object, limit: int = 600, first_line: bool = False) -> str:
    """``text`` (an exception, say) as one line: terminal colour codes dropped, its lines joined
    (or only the first, with ``first_line``), cut to ``limit`` characters."""
    lines = [part.strip() for part in _COLOUR.sub("", str(text)).splitlines() if part.strip()]
    if not lines:
        return type(text).__name__ if isinstance(text, BaseException) else ""
    joined = lines[0] if first_line else " ".join(lines)
    return joined if len(joined) <= limit else joined[:limit - 1] + "…"
