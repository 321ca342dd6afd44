"""Default near/far OOD sets and label-preserving domain-shift sets per in-distribution domain.

Used when a suite entry does not name its sets. Everything here ships offline (foolbox's samples,
synthetic sources). Near sets are semantically close (same image statistics, other classes); far
sets differ in low-level statistics as well.
"""

from __future__ import annotations

from dataclasses import dataclass

_FAR_SYNTH = ("photos", "noise:gaussian", "noise:uniform", "blobs")


@dataclass(frozen=True)
class OODSets:
    near: tuple[str, ...]
    far: tuple[str, ...]
    shift: tuple[str, ...] = ()


DEFAULT_SETS: dict[str, OODSets] = {
    "digits": OODSets(near=("samples:fashion-mnist",), far=("samples:cifar10", "photos", "noise:uniform", "blobs"), shift=("samples:mnist",)),
    "mnist": OODSets(near=("samples:fashion-mnist",), far=("samples:cifar10", "photos", "noise:uniform", "blobs")),
    "fashion-mnist": OODSets(near=("samples:mnist",), far=("samples:cifar10", "photos", "noise:uniform", "blobs")),
    "cifar10": OODSets(near=("samples:cifar100", "samples:imagenet"), far=("samples:mnist", "samples:fashion-mnist", *_FAR_SYNTH)),
    "cifar100": OODSets(near=("samples:cifar10", "samples:imagenet"), far=("samples:mnist", "samples:fashion-mnist", *_FAR_SYNTH)),
    "imagenet": OODSets(near=(), far=("samples:mnist", "samples:fashion-mnist", *_FAR_SYNTH)),
}
GENERIC = OODSets(near=(), far=_FAR_SYNTH)


def domain_of(*specs: str | None) -> str | None:
    """Guess the in-distribution domain from data specs / the model's data set name."""
    for spec in specs:
        s = (spec or "").lower()
        if not s:
            continue
        for key, dom in (("cifar100", "cifar100"), ("cifar-100", "cifar100"), ("cifar10", "cifar10"), ("cifar-10", "cifar10"), ("fashion", "fashion-mnist"), ("mnist", "mnist"), ("digits", "digits"), ("imagenet", "imagenet")):
            if key in s:
                return dom
    return None


def default_sets(*specs: str | None) -> tuple[str | None, OODSets]:
    dom = domain_of(*specs)
    return dom, DEFAULT_SETS.get(dom or "", GENERIC)
