"""The exchange written as one text block, the shape an app sent before the task alias existed.

The tagger's app sent its own system prompt and one user message holding the exchange:

    [CONTEXT]
    user_last_message: "Dạ, con voi ăn cỏ ạ."
    pika_response: "Đúng rồi, con giỏi lắm!"

A task whose `task.toml` has a `[block]` section reads such a message as the exchange: the
header, then one `name: "value"` line per role. A value is everything between the quote after
its name and the last quote before the next field (or the end), so quotes and line breaks
inside a child's message survive; it is taken as written, never unescaped.

Example::

    block = ContextBlock("[CONTEXT]", {"user": "user_last_message", "assistant": "pika_response"})
    block.read('[CONTEXT]\\nuser_last_message: "12"\\npika_response: "Đúng!"')
    # {"user": "12", "assistant": "Đúng!"}
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class BlockError(ValueError):
    """A block that cannot be read, with what is missing or wrong (the 400's message)."""


class ContextBlock:
    """Reads the exchange from a block of a header and one quoted field per role."""

    def __init__(self, header: str, fields: Mapping[str, str]) -> None:
        self.header = header
        self.fields = dict(fields)  # role -> the field's name in the block
        names = "|".join(re.escape(name) for name in self.fields.values())
        # A field starts a line: its name, a colon, optional blanks, the opening quote.
        self._starts = re.compile(rf'^[ \t]*({names})[ \t]*:[ \t]*"', re.MULTILINE)

    def holds(self, text: str) -> bool:
        """Whether the text is meant as a block: it starts with the header."""
        return text.lstrip().startswith(self.header)

    def read(self, text: str) -> dict[str, str]:
        """The exchange by role; `BlockError` naming the header or the fields it lacks."""
        if not self.holds(text):
            raise BlockError(f"it does not start with the header {self.header}")
        starts = list(self._starts.finditer(text))
        names = [match[1] for match in starts]
        missing = [name for name in self.fields.values() if name not in names]
        if missing:
            raise BlockError(f"it lacks the field{'s' * (len(missing) > 1)} {', '.join(missing)}")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise BlockError(f"the field {repeated[0]} appears twice")
        values: dict[str, str] = {}
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
            values[match[1]] = _quoted(match[1], text[match.end() : end])
        return {role: values[name] for role, name in self.fields.items()}


def _quoted(name: str, rest: str) -> str:
    """The text up to the field's closing quote: the last one before the next field."""
    body = rest.rstrip()
    if not body.endswith('"'):
        raise BlockError(f'the value of {name} has no closing quote (")')
    return body[:-1]
