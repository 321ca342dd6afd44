"""``factory:module:function`` models: import the user's module and call the function, in one-line errors.

The module and the function are the user's code: whatever they raise, and a ``SystemExit`` (a training
script that parses its own arguments at import, a ``sys.exit`` in the function) is a usage error of one
line, never a robustlab crash or a silent exit 0.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
from typing import Any

from torch import nn

from ..errors import ModelLoadError
from .options import first_line

__all__ = ["call_factory"]


def call_factory(target: str, num_classes: int | None) -> nn.Module:
    mod_name, _, fn_name = target.partition(":")
    if not mod_name or not fn_name:
        raise ModelLoadError(f"factory spec must be factory:package.module:function, got factory:{target}.")
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # a script's argparse at import prints its usage: kept for the one-line error
            mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {mod_name!r} for factory:{target} ({exc}); is it on PYTHONPATH?") from exc
    except SystemExit as exc:  # a training script that parses its own arguments or exits at import
        raise ModelLoadError(f"importing {mod_name!r} for factory:{target} exited (SystemExit {exc.code}{_last_line(said)}); "
                             "move the module's top-level code under `if __name__ == '__main__':`.") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed at import: say so in one line
        raise ModelLoadError(f"importing {mod_name!r} for factory:{target} raised {type(exc).__name__}: {first_line(exc)}; fix the module.") from exc
    sys.stderr.write(said.getvalue())  # what a module that imported fine wrote (warnings) is the user's to see
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelLoadError(f"{mod_name} has no function {fn_name!r}; check factory:{target}.")
    try:
        net = fn(num_classes=num_classes) if num_classes is not None and _takes_num_classes(fn) else fn()
    except SystemExit as exc:
        raise ModelLoadError(f"factory:{target} exited (SystemExit {exc.code}) instead of returning a model; pass a function that builds one.") from None
    except TypeError as exc:
        hint = " (pass --num-classes N: it is given to a function with a num_classes argument)" if num_classes is None and _takes_num_classes(fn) else ""
        raise ModelLoadError(f"factory:{target} raised TypeError: {first_line(exc)}{hint}; fix the function or its arguments.") from exc
    except Exception as exc:  # noqa: BLE001 - the user's own function failed: say so in one line
        raise ModelLoadError(f"factory:{target} raised {type(exc).__name__}: {first_line(exc)}; fix the function or its arguments.") from exc
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"factory:{target} returned {type(net).__name__}, not a torch.nn.Module.")
    return net


def _last_line(text: io.StringIO) -> str:
    """``: <the last line written>`` to a captured stream, or nothing."""
    lines = [ln.strip() for ln in text.getvalue().splitlines() if ln.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def _takes_num_classes(fn: Any) -> bool:
    """Whether ``fn`` accepts a ``num_classes`` keyword (by name or through ``**kwargs``). Decided from
    its signature, never by calling it and catching a ``TypeError``: that would also catch a
    ``TypeError`` raised inside the function and silently build the model without the class count."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin or C extension): pass it; an error then names it
        return True
    return any(p.kind is p.VAR_KEYWORD or (p.name == "num_classes" and p.kind is not p.POSITIONAL_ONLY) for p in params)
