"""A small generic registry, one per kind of extension, all discovered the same way.

Every kind (model loader, data source, attack, corruption, detector, defense, check, gate protocol)
is one :class:`Registry`:

* built-ins are found by importing every public module (name not starting with ``_``) of the
  kind's package (``package=``); each module registers its plugin with a decorator
  (``@DETECTORS.register("knn")``), so adding a built-in is one new file and one decorator;
* third parties add plugins through ``importlib.metadata`` entry points in the group
  ``robustlab.<kind>`` (e.g. ``robustlab.detectors``), loaded lazily on first use;
* a duplicate name is an error, an unknown name is an error that suggests the closest names;
* a plugin may carry its typed parameters as a frozen dataclass (``Params``); suite validation and
  CLI options are generated from those fields (:func:`params_fields`, :func:`build_params`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import pkgutil
import types
import typing
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from .errors import SuiteError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


def import_submodules(package: str) -> list[str]:
    """Import every public module of ``package`` (names not starting with ``_``); return their names.

    This is how built-in plugins are discovered for every kind: importing a module runs its
    ``@REGISTRY.register`` decorators. Subpackages are imported too (not recursed into).
    """
    pkg = importlib.import_module(package)
    names: list[str] = []
    for m in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if not m.name.startswith("_"):
            importlib.import_module(f"{package}.{m.name}")
            names.append(m.name)
    return names


class Registry(Generic[T]):
    """Name -> object mapping with lazily discovered built-ins and entry-point plugins.

    Args:
        kind: human name of what is registered ("check", "attack", ...), used in messages.
        group: entry-point group for third-party plugins, e.g. ``robustlab.attacks``.
        package: the package whose public modules hold the built-ins (imported on first lookup).
    """

    def __init__(self, kind: str, *, group: str | None = None, package: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self.package = package
        self._items: dict[str, T] = {}
        self._loaded = False
        self._loading = False
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
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self.package:
                import_submodules(self.package)
        finally:
            self._loading = False
        self._loaded = True
        if self.group:
            try:
                eps = metadata.entry_points(group=self.group)
            except Exception as exc:  # noqa: BLE001 - broken metadata must not break the tool
                log.warning("could not read entry points for %s: %s", self.group, exc)
                return
            for ep in eps:
                if ep.name in self._items:
                    log.warning("%s plugin %r from %s is ignored: a built-in has that name", self.kind, ep.name, ep.value)
                elif ep.name not in self._entry_points:
                    self._entry_points[ep.name] = ep

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names suggest the closest ones."""
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            obj = self._entry_points[name].load()
            if name not in self._items:  # loading the module may have registered it with the decorator
                self._items[name] = obj
            return self._items[name]
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


# -- typed plugin parameters ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParamField:
    """One field of a plugin's parameter dataclass, as the CLI and suite validation see it.

    Attributes:
        name: the field name (the suite key).
        kind: ``int``, ``float``, ``bool``, ``str``, ``list``, or ``any`` (other annotations).
        optional: ``None`` is allowed.
        default: the default value (``None`` for a required field).
        help: the field's ``metadata["help"]``, if any.
        cli: the CLI option name without dashes (``metadata["cli"]``, else the name with ``-``).
    """

    name: str
    kind: str
    optional: bool
    default: Any
    help: str
    cli: str


def _kind_of(tp: Any) -> tuple[str, bool]:
    optional = False
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return "any", optional
        tp = rest[0]
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        return "list", optional
    for t in (bool, int, float, str):
        if origin is t:
            return t.__name__, optional
    return "any", optional  # an annotation the CLI cannot type (Any, a class): taken as given


def params_fields(params_cls: type) -> list[ParamField]:
    """The fields of a frozen parameter dataclass with their kinds (from the type hints)."""
    hints = typing.get_type_hints(params_cls)
    out: list[ParamField] = []
    for f in dataclasses.fields(params_cls):
        kind, optional = _kind_of(hints.get(f.name, str))
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(ParamField(f.name, kind, optional, default, str(f.metadata.get("help", "")), str(f.metadata.get("cli", f.name.replace("_", "-")))))
    return out


_KIND_OK: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, (list, tuple)),
    "any": lambda v: True,
}


def check_kind(f: ParamField, value: Any, *, what: str) -> None:
    """Raise :class:`SuiteError` unless ``value`` fits the field's kind (``None`` only when optional)."""
    coerce_kind(f, value, what=what)


def coerce_kind(f: ParamField, value: Any, *, what: str) -> Any:
    """``value`` as the field's kind, or :class:`SuiteError`. Numbers are read as a suite's are: an int
    field takes ``1e5`` or ``1.0e+5`` (YAML 1.1 reads them as a string and a float) as 100000 and refuses
    ``1.5e0``; a float field takes ``'1e-3'`` or ``'8/255'``. Other kinds pass through unchanged."""
    if value is None and f.optional:
        return None
    article = "an optional " if f.optional else ("an " if f.kind[0] in "aeiou" else "a ")
    if f.kind in ("int", "float") and not isinstance(value, bool):
        from .parsing import as_integer, as_number

        try:
            return as_integer(value) if f.kind == "int" else as_number(value)
        except ValueError as exc:
            example = "100000 or 1e5" if f.kind == "int" else "0.01, 1e-2 or 8/255"
            raise SuiteError(f"{what}: {f.name} takes {article}{f.kind} such as {example}; {exc}.") from exc
    if not _KIND_OK[f.kind](value):
        raise SuiteError(f"{what}: {f.name} takes {article}{f.kind}, got {value!r}.")
    return value


def signature_params(cls: type, *, name: str | None = None) -> type:
    """A frozen dataclass of the keyword parameters (with defaults) of ``cls.__init__``.

    For plugins whose hyperparameters are keyword-only arguments with defaults (the house style)
    and that declare no ``Params`` dataclass: the signature is their typed parameter list.
    """
    import inspect

    init = getattr(cls, "__init__")
    hints = typing.get_type_hints(init)
    specs: list[tuple[str, Any, Any]] = []
    for p in inspect.signature(init).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            continue
        specs.append((p.name, hints.get(p.name, Any), dataclasses.field(default=p.default)))
    return dataclasses.make_dataclass(name or f"{cls.__name__}Params", specs, frozen=True)


def build_params(params_cls: type[T], values: Mapping[str, Any], *, what: str) -> T:
    """``params_cls(**values)``; an unknown key is a :class:`SuiteError` that lists the known ones,
    and the result's ``validate()`` (if any) runs. ``what`` names the plugin in messages."""
    known = [f.name for f in dataclasses.fields(typing.cast(Any, params_cls))]
    bad = sorted((k for k in values if k not in known), key=str)  # a YAML key may be a number or null: no sorting or matching of mixed types
    if bad:
        hint = "".join(f" (did you mean {c!r}?)" for b in bad[:1] if isinstance(b, str) for c in difflib.get_close_matches(b, known, n=1))
        raise SuiteError(f"{what} has no parameter(s) {', '.join(map(str, bad))}{hint}; its parameters are: {', '.join(known) or 'none'}.")
    fields = {f.name: f for f in params_fields(params_cls)}
    values = {k: coerce_kind(fields[k], v, what=what) for k, v in values.items()}
    try:
        obj = params_cls(**values)
    except TypeError as exc:
        raise SuiteError(f"{what}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj
