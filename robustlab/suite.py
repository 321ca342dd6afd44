"""Suites: YAML files naming the checks to run, their parameters and budgets.

A suite is validated completely (YAML syntax, unknown keys, unknown check names, parameter types,
impossible budgets) before any model is loaded::

    name: quick
    description: Clean accuracy and a short PGD sweep.
    checks:
      - check: clean
      - check: pgd
        id: pgd_linf            # optional, unique; defaults to the check name
        params: {norm: linf, steps: 10}

Built-in suites live in the repository's ``suites/`` folder, installed as ``robustlab._suites``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence


from .errors import SuiteError
from .metric_keys import is_legal_segment
from .yamlio import load_or_raise

_TOP_KEYS = {"name", "description", "checks", "save_adversarial"}
_ENTRY_KEYS = {"check", "id", "params", "description"}


@dataclass(frozen=True)
class SuiteEntry:
    check: str
    id: str
    params: Any  # a validated Params dataclass
    raw_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[SuiteEntry, ...]
    source: str
    sha256: str
    save_adversarial: bool = False  # write the adversarial checks' examples to disk (like --save-adversarial)


def builtin_suites() -> dict[str, Path]:
    """Built-in suite name -> file."""
    out: dict[str, Path] = {}
    try:
        root = resources.files("robustlab._suites")
        for f in root.iterdir():
            if f.name.endswith(".yaml"):
                out[f.name[:-5]] = Path(str(f))
    except ModuleNotFoundError:
        pass
    if not out:  # running from a source tree without installation
        src = Path(__file__).resolve().parent.parent / "suites"
        out = {p.stem: p for p in src.glob("*.yaml")}
    return dict(sorted(out.items()))


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite by built-in name or path."""
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SuiteError(f"suite file {p} does not exist; pass a built-in name ({', '.join(builtin_suites())}) or a YAML file.")
        path = p
    else:
        suites = builtin_suites()
        if name_or_path not in suites:
            close = difflib.get_close_matches(name_or_path, list(suites), 2)
            raise SuiteError(f"unknown suite {name_or_path!r}{'; did you mean ' + ', '.join(repr(c) for c in close) + '?' if close else '.'} Built-in suites: {', '.join(suites)}; or pass a YAML file.")
        path = suites[name_or_path]
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"suite file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from exc
    return parse_suite(text, source=str(path), default_name=path.stem)


def _entry(name: str, cid: Any, raw: Any, seen: set[str], where: str) -> SuiteEntry:
    """One validated suite entry (its params parsed by the check's own ``parse_params``)."""
    from .checks import CHECKS

    if name not in CHECKS:
        raise SuiteError(f"{where}{CHECKS.unknown_message(name)}")
    cls = CHECKS.get(name)
    cid = str(cid or name)
    if not is_legal_segment(cid):
        raise SuiteError(f"{where}id {cid!r} cannot be part of a metric key; use only letters, digits, '_', '-', '.' and spaces (no '/').")
    if cid in seen:
        raise SuiteError(f"{where}duplicate id {cid!r}; give each entry of the same check its own 'id'.")
    seen.add(cid)
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}'params' must be a mapping of NAME: VALUE, got {raw!r:.80}.")
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:  # ``params: {1: 2}``: a parameter name is text (the checks' own validation assumed it)
        raise SuiteError(f"{where}parameter name {odd[0]!r} of check {name!r} is not a name; write parameters as NAME: VALUE.")
    params = cls.parse_params(raw, where=where)
    return SuiteEntry(check=name, id=cid, params=params, raw_params=dict(raw))


def build_suite(name: str, checks: Sequence[tuple[str, Mapping[str, Any]]], *, description: str = "", source: str = "<built>") -> Suite:
    """A suite built in code (e.g. by ``robustlab certify``), validated like a YAML one: each
    ``(check, params)`` pair's params are parsed by the check. Its ``sha256`` is that of the canonical
    JSON of the definition (a YAML suite's is that of its text)."""
    if not checks:
        raise SuiteError(f"suite {source} needs at least one check.")
    seen: set[str] = set()
    entries = tuple(_entry(check, None, dict(raw), seen, f"suite {source}, check #{i}: ") for i, (check, raw) in enumerate(checks, 1))
    doc = {"name": name, "description": description, "checks": [{"check": c, "params": dict(p)} for c, p in checks]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return Suite(name=name, description=description, entries=entries, source=source, sha256=hashlib.sha256(text.encode()).hexdigest())


def _text(value: Any, key: str, where: str) -> str:
    """A suite's ``name``/``description``/``check``/``id`` as text (``""`` when absent); a list, mapping,
    number, boolean or date is refused: ``name: [a]`` or ``name: 1.10`` (read as 1.1) is not what was meant."""
    if value is None:
        return ""
    if not isinstance(value, str):
        kind = {list: "a list", dict: "a mapping", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), f"a {type(value).__name__}")
        raise SuiteError(f"{where}'{key}' must be text, got {kind} ({value!r:.60}); write it as a plain string (quote it: {key}: \"...\").")
    return value


def parse_suite(text: str, *, source: str = "<string>", default_name: str = "custom") -> Suite:
    doc = load_or_raise(text, what=f"suite {source}", error=SuiteError, fix="fix the file")
    if not isinstance(doc, dict):
        raise SuiteError(f"suite {source} must be a mapping with a 'checks' list.")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SuiteError(f"suite {source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(_TOP_KEYS))}.")
    checks = doc.get("checks")
    if not isinstance(checks, list) or not checks:
        raise SuiteError(f"suite {source} needs a non-empty 'checks' list.")
    entries: list[SuiteEntry] = []
    seen: set[str] = set()
    for i, e in enumerate(checks, 1):
        where = f"suite {source}, check #{i}: "
        if isinstance(e, str):
            e = {"check": e}
        if not isinstance(e, dict) or "check" not in e:
            raise SuiteError(f"{where}each entry needs 'check: NAME'.")
        bad = set(e) - _ENTRY_KEYS
        if bad:
            raise SuiteError(f"{where}unknown key(s) {', '.join(sorted(map(str, bad)))}; allowed: {', '.join(sorted(_ENTRY_KEYS))}.")
        for key in ("check", "id", "description"):
            _text(e.get(key), key, where)
        raw = e.get("params")  # absent or empty (``params:``) is no parameters; ``params: 0`` or ``[]`` is a mistake
        entries.append(_entry(str(e["check"]), e.get("id"), {} if raw is None else raw, seen, where))
    save = doc.get("save_adversarial", False)
    if not isinstance(save, bool):
        raise SuiteError(f"suite {source}: save_adversarial must be true or false, got {save!r}.")
    return Suite(
        name=_text(doc.get("name"), "name", f"suite {source}: ") or default_name,
        description=_text(doc.get("description"), "description", f"suite {source}: "),
        entries=tuple(entries),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        save_adversarial=save,
    )
