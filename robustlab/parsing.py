"""Parsing helpers shared by the CLI, suites and configs: one home for each (torch-free).

- :func:`parse_fraction`: ``"8/255"`` or ``"0.5"`` -> a float (budgets and ratios are written as
  fractions in suites, policies and CLI options).
- :func:`redact_credentials`: the password of every ``scheme://user:password@host`` in a text -> ``***``
  (command lines are recorded in scorecards, reports and MLflow).
- :func:`parse_enum`: a user-given string -> a member of an :class:`~enum.Enum`, with one line
  naming the allowed values when it is not one (a :class:`~robustlab.errors.SuiteError` unless the
  caller names another :class:`~robustlab.errors.RobustlabError`).
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import TypeVar

from .errors import RobustlabError, SuiteError

E = TypeVar("E", bound=Enum)

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/@:\s'\"]*):([^/@\s'\"]+)@")


def redact_credentials(text: str) -> str:
    """``"--mlflow-uri http://svc:S3cret@host:5000"`` -> ``"--mlflow-uri http://svc:***@host:5000"``: the
    password of every URL with credentials in ``text`` is replaced (the user name stays, to say whose)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)


def parse_fraction(text: str) -> float:
    """``"8/255"`` -> 0.0313..., ``" 0.5 "`` -> 0.5. Raises ``ValueError`` (never
    ``ZeroDivisionError`` or ``OverflowError``) when ``text`` is not a finite number or fraction."""
    s = text.strip()
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            v = float(a) / float(b)
        else:
            v = float(s)
    except (ZeroDivisionError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a finite number") from exc
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


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
