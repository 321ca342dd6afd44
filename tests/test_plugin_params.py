"""One discovery style and typed plugin parameters (issue 15, part C): package discovery, entry-point
corruptions and per-detector parameters accepted by suite validation, generated defend options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from robustlab.errors import SuiteError


def test_registry_discovers_every_public_module_of_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.registry import Registry

    pkg = tmp_path / "rl_tmp_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from robustlab.registry import Registry\nTHINGS = Registry('thing', package='rl_tmp_plugins')\n")
    for name in ("alpha", "beta", "_private"):
        (pkg / f"{name}.py").write_text(f"from . import THINGS\n\n@THINGS.register('{name}')\nclass X:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import rl_tmp_plugins  # type: ignore[import-not-found]

    reg: Registry[type] = rl_tmp_plugins.THINGS
    assert reg.names() == ["alpha", "beta"]
    sys.modules.pop("rl_tmp_plugins", None)


def test_suite_accepts_a_registered_plugin_corruption() -> None:
    from robustlab.checks.corruption_params import CorruptionParams
    from robustlab.corruptions.registry import FAST_CORRUPTIONS

    FAST_CORRUPTIONS.names()
    FAST_CORRUPTIONS.add("rl_test_invert", lambda x, s, seeds: 1 - x)
    try:
        p = CorruptionParams(corruptions=["rl_test_invert", "fog"], severities=[1])
        p.validate()
        assert p.names() == ["rl_test_invert", "fog"]
        with pytest.raises(SuiteError, match="reference covers the 19 built-in"):
            CorruptionParams(corruptions=["rl_test_invert"], backend="reference").validate()
        with pytest.raises(SuiteError, match="did you mean 'rl_test_invert'"):
            CorruptionParams(corruptions=["rl_test_invrt"]).validate()
    finally:
        FAST_CORRUPTIONS._items.pop("rl_test_invert")


@pytest.mark.parametrize("entry, msg", [
    ({"name": "knn", "k": "many"}, "k takes an int"),
    ({"name": "knn", "kk": 3}, "did you mean 'k'"),
    ({"name": "vim", "dim": None, "extra": 1}, "has no parameter"),
    ({"k": 3}, "mapping with a name"),
])
def test_ood_detector_entries_are_validated_against_the_detector_params(entry: dict, msg: str) -> None:
    from robustlab.checks.ood_params import OODParams

    OODParams(detectors=["msp", {"name": "knn", "k": 7}, {"name": "vim", "dim": None}]).validate()
    with pytest.raises(SuiteError, match=msg):
        OODParams(detectors=["msp", entry]).validate()


def test_defend_options_are_generated_from_each_methods_params() -> None:
    from robustlab.commands.plugin_options import chosen_params, plugin_options

    @dataclass(frozen=True)
    class A:
        eps: float | None = None
        steps: int = 10
        seed: int = 0
        jitter: bool = True

    @dataclass(frozen=True)
    class B:
        eps: float | None = field(default=None, metadata={"help": "budget"})
        width: int = field(default=3, metadata={"cli": "b-width"})

    class MA:
        Params = A

    class MB:
        Params = B

    opts = plugin_options([("ma", MA), ("mb", MB)], reserved={"seed"})
    assert set(opts) == {"eps", "steps", "ma-seed", "no-jitter", "b-width"}
    assert set(opts["eps"].fields) == {"ma", "mb"} and "budget" in opts["eps"].help()
    kw = {opts["eps"].dest: "8/255", opts["steps"].dest: "5", opts["no-jitter"].dest: True, opts["ma-seed"].dest: "3"}
    assert chosen_params(opts, "ma", kw, what="--method") == {"eps": 8 / 255, "steps": 5, "jitter": False, "seed": 3}
    import click

    with pytest.raises(click.UsageError, match="--steps applies to ma"):
        chosen_params(opts, "mb", {opts["steps"].dest: "5"}, what="--method")
    with pytest.raises(click.BadParameter):
        chosen_params(opts, "ma", {opts["steps"].dest: "five"}, what="--method")
