"""Name -> builder registries, one per kind of thing chosen by a short string in config.

Every configurable choice (model, loss, dataset, optimiser, ...) is looked up here so that an unknown
name fails before any work starts, with a message that lists the known names and the config field.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A mapping from short names to builders of one kind (for example ``model``).

    ``field`` is the config field users set to choose an entry (e.g. ``model.name``); it appears in
    error messages so the user knows what to change.
    """

    def __init__(self, kind: str, field: str, plural: str | None = None) -> None:
        self.kind = kind
        self.field = field
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises listing the known ones."""
        if name not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}' (config field `{self.field}`); "
                f"known {self.plural}: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
