"""Parsing helpers shared by the CLI, suites and configs: one home for each (torch-free).

- :func:`parse_fraction`: ``"8/255"``, ``"0.5"`` or ``"1e-3"`` -> a float (budgets and ratios are written as
  fractions in suites, policies and CLI options); :func:`as_number` does the same for a YAML value.
- :func:`parse_integer`: ``"100000"``, ``"1e5"`` or ``"1.0e+5"`` -> an int (a count written in exponent
  notation, refused unless the value is a whole number); :func:`as_integer` does the same for a YAML value
  (YAML 1.1 reads ``1e5`` as the string ``'1e5'`` and ``1.0e+5`` as a float).
- :func:`redact_credentials`: the password of every ``scheme://user:password@host`` in a text -> ``***``
  (command lines are recorded in scorecards, reports and MLflow).
- :func:`parse_enum`: a user-given string -> a member of an :class:`~enum.Enum`, with one line
  naming the allowed values when it is not one (a :class:`~robustlab.errors.SuiteError` unless the
  caller names another :class:`~robustlab.errors.RobustlabError`).
"""

from __future__ import annotations

import decimal
import math
import re
from enum import Enum
from typing import Any, TypeVar

from .errors import RobustlabError, SuiteError

E = TypeVar("E", bound=Enum)

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/@:\s'\"]*):([^/@\s'\"]+)@")


def redact_credentials(text: str) -> str:
    """``"--mlflow-uri http://svc:S3cret@host:5000"`` -> ``"--mlflow-uri http://svc:***@host:5000"``: the
    password of every URL with credentials in ``text`` is replaced (the user name stays, to say whose)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)


#: a plain decimal number: digits with an optional point and exponent (no '_', which ``float`` reads as
#: nothing: ``0_5`` was 5; no ``nan`` or ``inf``; ASCII digits only)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: the largest exponent-notation integer accepted (1e18): counts past it are typos, and ``1e999999999``
#: must not build a billion-digit number
_MAX_EXPONENT_INT = 10**18


def _decimal(text: str, whole: str) -> float:
    if re.fullmatch(r"[+-]?(nan|inf|infinity)", text, re.IGNORECASE):
        raise ValueError(f"{whole!r} is not a finite number")
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{whole!r} is not a number (digits with an optional point and exponent, no '_')")
    return float(text)


def parse_fraction(text: str) -> float:
    """``"8/255"`` -> 0.0313..., ``" 0.5 "`` -> 0.5, ``"1e-3"`` -> 0.001. Raises ``ValueError`` (never
    ``ZeroDivisionError`` or ``OverflowError``) when ``text`` is not a finite number or fraction of two
    plain decimals (``0_5``, which ``float`` reads as 5, ``nan`` and ``1/2/3`` are refused)."""
    s = text.strip()
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            v = _decimal(a.strip(), text) / _decimal(b.strip(), text)
        else:
            v = _decimal(s, text)
    except (ZeroDivisionError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a finite number") from exc
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


def parse_integer(text: str) -> int:
    """``"100000"``, ``"1e5"``, ``"1.0e+5"`` -> 100000. Raises ``ValueError`` with a reason when ``text`` is
    not a plain decimal, is not a whole number (``"1.5e0"``, ``"8/2"``), or is written with an exponent
    and exceeds 1e18."""
    s = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", s):
        return int(s)
    if not _DECIMAL.fullmatch(s):
        raise ValueError(f"{text!r} is not an integer")
    d = decimal.Decimal(s)
    if abs(d) > _MAX_EXPONENT_INT:
        raise ValueError(f"{text!r} is past 1e18; write a larger count out in digits")
    if d != d.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number")
    return int(d)


def as_number(value: Any) -> float:
    """A YAML or JSON value as a finite float: an int or float, or a string :func:`parse_fraction` reads
    (``'1e-2'``, ``'8/255'``). Raises ``ValueError`` for anything else (``true``, a list, ``.nan``)."""
    if isinstance(value, str):
        return parse_fraction(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    try:
        v = float(value)
    except OverflowError as exc:  # an int past the float range
        raise ValueError(f"{value!r} is not a finite number") from exc
    if not math.isfinite(v):
        raise ValueError(f"{value!r} is not a finite number")
    return v


def as_integer(value: Any) -> int:
    """A YAML or JSON value as an int: an int, a float that is a whole number (``1.0e+5``), or a string
    :func:`parse_integer` reads (``'1e5'``). Raises ``ValueError`` for anything else (``1.5``, ``true``)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_integer(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{value!r} is not a whole number")
        if abs(value) > _MAX_EXPONENT_INT:
            raise ValueError(f"{value!r} is past 1e18; write a larger count out in digits")
        return int(value)
    raise ValueError(f"{value!r} is not an integer")


def parse_enum(
    cls: type[E], value: object, what: str, *, error: type[RobustlabError] = SuiteError, ignore_case: bool = False, hint: str = ""
) -> E:
    """``value`` as a member of ``cls`` (a member passes through; strings match a member's value,
    ignoring surrounding blanks, and letter case too with ``ignore_case``).

    Raises ``error`` with one line: ``"{what} must be one of a, b, c, got 'x'."`` (``"...; {hint}."``
    with a ``hint`` that says what to fix)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        text = value.strip().casefold() if ignore_case else value.strip()
        for member in cls:
            name = str(member.value)
            if text == (name.casefold() if ignore_case else name):
                return member
    tail = f"; {hint}." if hint else "."
    raise error(f"{what} must be one of {', '.join(str(m.value) for m in cls)}, got {value!r}{tail}")
