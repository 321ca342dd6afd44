"""Deterministic mapping of scorecard metric keys to MLflow metric keys.

MLflow (3.x, ``mlflow.utils.validation``) accepts keys of at most 250 characters made of
alphanumerics, ``_ - . / :`` and spaces, that are normalised POSIX paths (no ``//``, no leading
``/``, no ``.``/``..`` segments). robustlab keys such as ``adversarial/pgd_linf/eps=0.0314/robust_accuracy``
or ``ood/energy/cifar100/fpr@95tpr`` contain ``=`` and ``@``, so they are mapped:

* ``=`` -> ``_`` and ``@`` -> ``_at_`` (``eps=0.0314`` -> ``eps_0.0314``, ``fpr@95tpr`` -> ``fpr_at_95tpr``);
* any other character outside the allowed set -> ``_``; ``:`` too (not allowed on Windows stores);
* empty, ``.`` and ``..`` segments are dropped (``a//b`` -> ``a/b``);
* when the result is longer than 250 characters, or two keys of one scorecard map to the same
  MLflow key, the key is cut and suffixed with ``-h`` + the first 8 hex of the sha256 of the original key
  (``...-h1a2b3c4d``).

The full mapping of a run is logged as the artifact ``mlflow_keys.json`` so a key can always be
traced back; the scorecard (the source of truth) is logged as ``scorecard.json``.
"""

from __future__ import annotations

import hashlib
import re

MAX_KEY = 250
_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def sanitize_key(key: str) -> str:
    """Map one scorecard key to a valid MLflow key (without collision handling)."""
    s = key.replace("=", "_").replace("@", "_at_")
    s = _BAD.sub("_", s)
    parts = [p for p in s.split("/") if p not in ("", ".", "..")]
    s = "/".join(parts) or "_"
    if len(s) > MAX_KEY:
        s = _hashed(s, key)
    return s


def _hashed(s: str, original: str) -> str:
    h = hashlib.sha256(original.encode()).hexdigest()[:8]
    return s[: MAX_KEY - 10].rstrip("/") + "-h" + h


def key_mapping(keys: list[str] | set[str]) -> dict[str, str]:
    """Map every scorecard key to a unique MLflow key (deterministic, independent of order)."""
    base = {k: sanitize_key(k) for k in sorted(keys)}
    seen: dict[str, list[str]] = {}
    for k, v in base.items():
        seen.setdefault(v, []).append(k)
    out: dict[str, str] = {}
    for v, ks in seen.items():
        if len(ks) == 1:
            out[ks[0]] = v
        else:
            for k in ks:  # collision: every key of the group gets its hash suffix
                out[k] = _hashed(v, k)
    return out
