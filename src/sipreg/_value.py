"""The base of the immutable values the request path builds, with a constructor mypyc compiles.

A dataclass's generated ``__init__`` stays interpreted under mypyc (mypyc/mypyc#817),
and a frozen one sets every field through ``object.__setattr__``: building one
REGISTER's URIs, name-addrs, Via, binding and outcome so took a fifth of the
compiled request path, against a tenth of that with a written ``__init__``.  So
those classes write their ``__init__``, one parameter a field named as the field,
and derive equality, hashing, ``repr`` and :meth:`Value.replace` from their
``__slots__``.  Their attributes are ``Final``: mypy refuses an assignment, and
the compiled classes refuse it at run time too.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class Value:
    """Equality, hash, repr and ``replace`` from the fields ``__slots__`` names, in order."""

    __slots__: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes: Any) -> Self:
        """A copy with the fields named in ``changes`` replaced (as ``dataclasses.replace``)."""
        unknown = changes.keys() - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        values = {name: changes.get(name, getattr(self, name)) for name in self.__slots__}
        return type(self)(**values)
