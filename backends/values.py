"""`value_class`: the values built on every request and every shadowed pair.

Example::

    @value_class
    class Leg:
        backend: str
        status: int

A slotted dataclass that mypy checks as frozen (assigning a field is a type error), built at
the cost of a plain one: `dataclass(frozen=True)` writes each field through the slower
`object.__setattr__`, and a shadowed request builds about ten of these (benchmarks/README.md,
optimisation log). Equal values hash alike, as frozen ones do.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def value_class(cls: type[T]) -> type[T]:
    return dataclasses.dataclass(slots=True, unsafe_hash=True)(cls)
