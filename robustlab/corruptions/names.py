"""The ImageNet-C corruption groups (torch-free, so the report can import them).

These are the *benchmark protocol's* groups (Hendrycks & Dietterich 2019): the 15 corruptions mCE
averages over and the 4 held-out ones. Which corruptions exist is the registry's business
(:data:`robustlab.corruptions.registry.FAST_CORRUPTIONS`, which also holds entry-point plugins);
these tuples only say which built-ins belong to which group.
"""

from __future__ import annotations

BENCHMARK: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
HELD_OUT: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: the 19 built-in corruptions: the suite group ``all`` (plugins are named one by one, so an
#: installed plugin never changes what ``all`` measures).
BUILTIN: tuple[str, ...] = BENCHMARK + HELD_OUT
ALL = BUILTIN  # the former name
#: the group words a suite (and ``robustlab corrupt --corruptions``) may use instead of names.
GROUPS: dict[str, tuple[str, ...]] = {"all": BUILTIN, "benchmark": BENCHMARK, "held_out": HELD_OUT}


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names with the group words expanded, in order, without repeats."""
    out: list[str] = []
    for c in names:
        for n in GROUPS.get(c, (c,)):
            if n not in out:
                out.append(n)
    return out
