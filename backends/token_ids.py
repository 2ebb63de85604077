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


def take_ids(data: bytes, ids: TokenIds) -> bytes:
    """`data` with every id list replaced by null; the prompt's ids and the first choice's output
    ids (in order) go to `ids`. Lists of other choices (`n` > 1) are dropped, as only the first
    choice is compared."""
    at = data.find(_KEY_END)
    if at < 0:  # the common case: nothing to take
        return data
    # Found with `bytes.find`, not a regular expression: this runs on every event of both legs
    # of a shadowed stream, and the expression tried its match at every quote of the JSON.
    pieces: list[bytes] = []
    done = 0  # `data` up to here is in `pieces`
    while at >= 0:
        listed = _IDS_LIST.match(data, at + len(_KEY_END))
        name, key = _key_at(data, at)
        if listed is not None and name is not None:
            _keep(ids, name, listed[1], data, at)
            pieces += (data[done:key], b'"', name, b'":null')
            done = listed.end()
        at = data.find(_KEY_END, at + len(_KEY_END))
    pieces.append(data[done:])
    return b"".join(pieces)


_KEY_END = b'token_ids":['  # a quote unescaped: the end of a key, never inside a string
_PROMPT = b"prompt_token_ids"
_IDS_LIST = re.compile(rb"([0-9,\s]*)\]")


def _keep(ids: TokenIds, name: bytes, listed: bytes, data: bytes, at: int) -> None:
    """The ids of one list into `ids`: the prompt's once, the first choice's in order."""
    values = [*map(int, listed.split(b","))] if listed.strip() else []
    if name == _PROMPT:
        if ids.prompt is None:
            ids.prompt = tuple(values)
    elif not _first_choice(data, at):
        return  # another choice's (`n` > 1): dropped
    elif ids.output is None:
        ids.output = values
    else:
        ids.output += values  # in place: a copy per event grew with the stream


def _key_at(data: bytes, at: int) -> tuple[bytes | None, int]:
    """The key whose name ends in `token_ids` at `at`, if it is one of the two vLLM fills, and
    where it starts (its opening quote)."""
    if data[at - 1 : at] == b'"':
        return b"token_ids", at - 1
    if data[at - 8 : at] == b'"prompt_':
        return _PROMPT, at - 8
    return None, at


def _first_choice(data: bytes, at: int) -> bool:
    """Whether the list at `at` belongs to choice 0: the nearest `"index":` before it says."""
    start = data.rfind(b'"index":', 0, at)
    return start < 0 or data[start + 8 : start + 10].lstrip()[:1] == b"0"
