"""Typed reports as JSON: dataclasses as objects with their fields in declared order.

The reports' JSON kept the shape it had when they were built as dicts, which a dataclass's own
fields do not always give; three field options (`dataclasses.field(metadata=...)`) say where:

    FLAT        the value's keys sit in the parent object (the noise floor: counts + agreement)
    EMPTY       None prints as {} (no backends to list)
    omit("n")   these keys of the value are left out (an eval target's latency has no `n`)

Example::

    render_json(summarize(pairs, rule))      # the text `gateway report --format json` prints
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

KEY = "json"
FLAT: Mapping[str, object] = {KEY: "flat"}
EMPTY: Mapping[str, object] = {KEY: "empty"}


def omit(*keys: str) -> Mapping[str, object]:
    return {KEY: frozenset(keys)}


def render_json(value: object) -> str:
    """Indented JSON, one document per report, ending in a newline."""
    return orjson.dumps(plain(value), option=orjson.OPT_INDENT_2).decode() + "\n"


def plain(value: object) -> Any:
    """JSON-ready data: dicts, lists, strings, numbers, booleans and None."""
    if is_dataclass(value) and not isinstance(value, type):
        return _object(value)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _object(value: DataclassInstance) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for spec in fields(value):
        item = plain(getattr(value, spec.name))
        shape = spec.metadata.get(KEY)
        if shape == "flat":
            result.update(item)
        elif shape == "empty" and item is None:
            result[spec.name] = {}
        elif isinstance(shape, frozenset):
            result[spec.name] = {key: part for key, part in item.items() if key not in shape}
        else:
            result[spec.name] = item
    return result
