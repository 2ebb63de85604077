"""Turning an engine's streamed text into OpenAI deltas: pure, so it tests without servers.

Engines stream either the new text of each step (deltas) or all text so far (cumulative). A
cumulative decode that ends inside a multi-byte character ends in U+FFFD until the next token
completes it, so the unstable tail is held back rather than sent and later contradicted.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"


class CumulativeText:
    """Feeds cumulative snapshots, returns only what is new and stable."""

    def __init__(self) -> None:
        self._sent = ""

    def delta(self, snapshot: str, final: bool = False) -> str:
        stable = snapshot if final else snapshot.rstrip(REPLACEMENT)
        if not stable.startswith(self._sent):
            # A snapshot that rewrote what was sent cannot be un-sent; send only what grew.
            common = _common_prefix(stable, self._sent)
            stable = self._sent + stable[common:]
        new = stable[len(self._sent) :]
        self._sent = stable
        return new


class StopStrings:
    """Applies OpenAI `stop`: ends at the first stop string, which is not part of the answer.

    Text that could be the start of a stop string is held back until it is known not to be.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cut = min((index for stop in self._stops if (index := buffer.find(stop)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = _longest_stop_prefix_suffix(buffer, self._stops)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, once the engine has finished."""
        rest, self._held = self._held, ""
        return "" if self.stopped else rest


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


def _common_prefix(first: str, second: str) -> int:
    size = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        size += 1
    return size
