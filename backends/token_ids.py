"""Token ids in OpenAI answers (vLLM's `return_token_ids` extension), taken out of the bytes so
the client's answer reads as it would have without them. Pure.

With `return_token_ids`, vLLM fills two fields it always sends: `prompt_token_ids` (top level of
a chat answer, in a completion's choice, in a stream's first event) and `token_ids` (each choice;
each streamed delta's new tokens). Without it both are `null`, so writing `null` back gives the
client the answer it would have had, byte for byte.

Example::

    ids = TokenIds()
    body = take_ids(b'{"choices":[{"token_ids":[5,9]}],"prompt_token_ids":[1,2]}', ids)
    body, ids.prompt, ids.output     # b'{"choices":[{"token_ids":null}],...null}', (1, 2), [5, 9]
"""

from __future__ import annotations

import re

from backends.base import TokenIds

_IDS = re.compile(rb'"(prompt_token_ids|token_ids)":\[([0-9,\s]*)\]')


def take_ids(data: bytes, ids: TokenIds) -> bytes:
    """`data` with every id list replaced by null; the prompt's ids and the first choice's output
    ids (in order) go to `ids`. Lists of other choices (`n` > 1) are dropped, as only the first
    choice is compared."""

    def take(match: re.Match[bytes]) -> bytes:
        values = [int(part) for part in match[2].split(b",") if part.strip()]
        if match[1] == b"prompt_token_ids":
            if ids.prompt is None:
                ids.prompt = tuple(values)
        elif _first_choice(data, match.start()):
            ids.output = [*(ids.output or ()), *values]
        return b'"' + match[1] + b'":null'

    if b'token_ids":[' not in data:  # the common case: nothing to take
        return data
    return _IDS.sub(take, data)


def _first_choice(data: bytes, at: int) -> bool:
    """Whether the list at `at` belongs to choice 0: the nearest `"index":` before it says."""
    start = data.rfind(b'"index":', 0, at)
    return start < 0 or data[start + 8 : start + 10].lstrip()[:1] == b"0"
