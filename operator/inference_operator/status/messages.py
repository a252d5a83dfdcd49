"""Messages as status shows them: one line, at most MAX_MESSAGE characters."""

from __future__ import annotations

MAX_MESSAGE = 1024


def short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
