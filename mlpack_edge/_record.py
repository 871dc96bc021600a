"""Plain value classes for the device start-up path (runtime and agent), instead of ``@dataclass``.

A one-shot ``predict`` imports the agent's contracts (profile, wire counts, thresholds,
model info) at every start. ``@dataclass`` builds each class's ``__init__``/``__repr__``/
``__eq__`` (and, frozen, ``__setattr__``/``__hash__``) by compiling source text at import:
~0.2-0.5 ms a class, about half of what the agent added to a one-row ``predict``
(benchmarks/executable.py). Here each class writes its ``__init__`` by hand (compiled
once, into the ``.pyc``) and lists its fields in ``_fields``; these bases give the rest,
with what ``@dataclass`` would give: field-wise ``==`` between instances of the same
class, ``repr`` naming every field, :meth:`Record.replace` for ``dataclasses.replace``, and
for :class:`Frozen` immutability and a hash.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Record", "Frozen"]


class Record:
    """A mutable value: ``==`` and ``repr`` over ``_fields``; unhashable, like a dataclass."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{self.__class__.__qualname__}({inner})"

    def replace(self, **changes: Any) -> Any:
        """A new instance with ``changes`` (field name -> value), like ``dataclasses.replace``:
        built by ``__init__`` (which must take every field by name), so its checks run again."""
        unknown = set(changes).difference(self._fields)
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
        return self.__class__(**({n: getattr(self, n) for n in self._fields} | changes))


def _rebuild(cls: type, state: dict[str, Any]) -> Any:
    obj = object.__new__(cls)
    for k, v in state.items():
        object.__setattr__(obj, k, v)
    return obj


class Frozen(Record):
    """An immutable value (assigning a field raises ``AttributeError``); hashable."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle without __setattr__
        return _rebuild, (self.__class__, {n: getattr(self, n) for n in self.__slots__})
