"""A small generic registry, one per kind of extension (checks, attacks, detectors, ...).

Names are registered with a decorator, a duplicate name is an error, an unknown name is an error that
suggests the closest names, and third-party plugins arrive lazily through ``importlib.metadata``
entry points (group ``robustlab.<kind>``).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Name -> object mapping with lazy built-ins and entry-point plugins.

    Args:
        kind: human name of what is registered ("check", "attack", ...), used in messages.
        group: entry-point group for third-party plugins, e.g. ``robustlab.attacks``.
        builtins: modules imported on first lookup; importing them registers the built-ins.
    """

    def __init__(self, kind: str, *, group: str | None = None, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._loaded = False
        self._entry_points: dict[str, metadata.EntryPoint] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``. A duplicate name raises ``ValueError``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._items[name] = obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtins:
            importlib.import_module(mod)
        if self.group:
            try:
                eps = metadata.entry_points(group=self.group)
            except Exception as exc:  # noqa: BLE001 - broken metadata must not break the tool
                log.warning("could not read entry points for %s: %s", self.group, exc)
                return
            for ep in eps:
                if ep.name not in self._items:
                    self._entry_points[ep.name] = ep

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names suggest the closest ones."""
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            obj = self._entry_points[name].load()
            self._items[name] = obj
            return obj
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(names)}."

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items or name in self._entry_points

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._items) | set(self._entry_points))

    def items(self) -> Iterator[tuple[str, T]]:
        for n in self.names():
            yield n, self.get(n)
