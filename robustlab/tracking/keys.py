"""MLflow names: the scorecard's metric keys, as they are.

MLflow (3.x, ``mlflow.utils.validation``) accepts names of at most 250 characters made of
alphanumerics, ``_ - . / :`` and spaces that are normalised POSIX paths. Every scorecard key is
built by :mod:`robustlab.metric_keys`, whose grammar is a subset of that, so metrics are logged
under exactly the keys of the scorecard: no sanitising, no hashing, no remapping, and no
``mlflow_keys.json`` mapping artifact any more (it would be the identity). A key that breaks the
grammar is a bug in the check that produced it, and logging stops with :class:`MetricKeyError`.

Parameter names (``check/<id>/<param>``) and training-history names (``train/<name>``) are not
scorecard keys; their parts pass through :func:`robustlab.metric_keys.legal_segment`.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from ..metric_keys import MetricKeyError, illegal_keys, legal_segment


def checked_metric_keys(keys: Iterable[str]) -> list[str]:
    """The keys, sorted; raises :class:`MetricKeyError` naming the first keys MLflow would refuse."""
    ks = sorted(keys)
    bad = illegal_keys(ks)
    if bad:
        raise MetricKeyError(f"{len(bad)} scorecard metric key(s) break the key grammar (a bug in the check that wrote them): {', '.join(map(repr, bad[:3]))}")
    return ks


#: MLflow refuses parameter and metric names longer than this
MAX_NAME = 250


def name_key(*parts: str) -> str:
    """An MLflow parameter or history name from parts that may hold any character; a name longer than
    MLflow accepts is cut and ends in a hash of the whole, so distinct names stay distinct."""
    k = "/".join(legal_segment(p) for p in parts)
    if len(k) <= MAX_NAME:
        return k
    return k[: MAX_NAME - 17] + "-" + hashlib.sha256(k.encode("utf-8")).hexdigest()[:16]
