"""Click options generated from plugins' typed parameters (frozen dataclasses).

``robustlab defend --method NAME`` takes the chosen method's hyperparameters as options; the
options are not written by hand but generated from every registered method's ``Params`` fields
(:func:`robustlab.registry.params_fields`): a field shared by several methods (``eps``) is one
option, an option given for a method that lacks the field is a usage error, and a plugin method
from an entry point gets its options the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import click

from ..registry import ParamField, params_fields
from ..parsing import parse_fraction, parse_integer


@dataclass
class PluginOption:
    """One generated option: its flag, its click destination and the (plugin, field) pairs it sets."""

    flag: str
    dest: str
    is_flag: bool
    flag_value: bool | None
    fields: dict[str, ParamField] = field(default_factory=dict)  # plugin name -> field

    def help(self) -> str:
        first = next(iter(self.fields.values()))
        text = next((f.help for f in self.fields.values() if f.help), "")
        if self.is_flag:
            if self.flag_value is False:  # --no-X: the field's help describes X, which this flag turns off
                return f"{', '.join(self.fields)}: turn off (on by default): {text or first.name}"
            return f"{', '.join(self.fields)}: {text or first.name}"
        defaults = "; ".join(f"{p} {_show(f.default)}" for p, f in self.fields.items())
        return f"{', '.join(self.fields)}: {text or first.name} [{defaults}]"


def _show(v: Any) -> str:
    if v is None:
        return "auto"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plugin_options(plugins: Iterable[tuple[str, type]], *, reserved: set[str], prefix: str = "p__") -> dict[str, PluginOption]:
    """Options for the ``Params`` fields of ``(name, class)`` pairs, keyed by flag.

    A field's flag is ``--<cli>`` (``--no-<cli>`` for a bool defaulting to True); a flag in
    ``reserved`` (the command's own options), or one already taken by a field of another kind,
    becomes ``--<plugin>-<cli>``.
    """
    out: dict[str, PluginOption] = {}
    for name, cls in plugins:
        params_cls = getattr(cls, "Params", None)
        if params_cls is None:
            continue
        for f in params_fields(params_cls):
            is_flag = f.kind == "bool"
            flag_value = (not bool(f.default)) if is_flag else None
            base = f"no-{f.cli}" if is_flag and f.default else f.cli
            flag = base
            taken = out.get(flag)
            if flag in reserved or (taken is not None and (taken.is_flag != is_flag or taken.flag_value != flag_value or name in taken.fields)):
                flag = f"{name}-{base}"
            opt = out.setdefault(flag, PluginOption(flag, prefix + flag.replace("-", "_"), is_flag, flag_value))
            opt.fields[name] = f
    return out


def click_options(options: dict[str, PluginOption]) -> list[click.Option]:
    """The generated options as click options (to append to a command's ``params``)."""
    metavar = {"int": "INT", "float": "NUMBER", "list": "A,B,...", "str": "TEXT"}
    out: list[click.Option] = []
    for opt in options.values():
        if opt.is_flag:
            out.append(click.Option([f"--{opt.flag}", opt.dest], is_flag=True, default=False, help=opt.help()))
        else:
            kinds = {f.kind for f in opt.fields.values()}
            mv = metavar.get(kinds.pop(), "TEXT") if len(kinds) == 1 else "VALUE"
            out.append(click.Option([f"--{opt.flag}", opt.dest], default=None, metavar=mv, help=opt.help()))
    return out


def option_names(cmd: click.Command) -> set[str]:
    """The option names (without dashes) a command already has."""
    return {n.lstrip("-") for p in cmd.params for n in (*p.opts, *p.secondary_opts)}


def parse_value(f: ParamField, value: str, flag: str) -> Any:
    """A CLI string as the field's type (numbers accept fractions like ``8/255``)."""
    text = value.strip()
    try:
        if f.kind == "int":
            return parse_integer(text)  # 1e3 is 1000; 1.5e0 and 0_5 (int() reads 5) are refused
        if f.kind == "float":
            v = parse_fraction(text)
            if not math.isfinite(v):
                raise ValueError(text)
            return v
        if f.kind == "list":
            return [_scalar(t.strip()) for t in text.split(",") if t.strip()]
    except (ValueError, ZeroDivisionError) as exc:
        kind = "an integer such as 100 or 1e2" if f.kind == "int" else "a finite number or a fraction like 8/255"
        raise click.BadParameter(f"takes {kind}, got {value!r}", param_hint=f"--{flag}") from exc
    return text


def _scalar(text: str) -> Any:
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    try:
        return parse_fraction(text)  # never int(): it reads 0_5 as 5
    except ValueError:
        return text


def chosen_params(options: dict[str, PluginOption], plugin: str, kw: dict[str, Any], *, what: str) -> dict[str, Any]:
    """The parameters of ``plugin`` from the generated options that were given (others keep their
    defaults); an option that does not apply to ``plugin`` is a usage error."""
    out: dict[str, Any] = {}
    for opt in options.values():
        v = kw.get(opt.dest)
        if v is None or v is False:
            continue
        f = opt.fields.get(plugin)
        if f is None:
            raise click.UsageError(f"--{opt.flag} applies to {', '.join(opt.fields)}, not to {what} {plugin}.")
        out[f.name] = opt.flag_value if opt.is_flag else parse_value(f, str(v), opt.flag)
    return out
