"""factory: specs get --num-classes only when the function takes it, decided from its signature.

Before, robustlab called ``fn(num_classes=K)`` and, on any ``TypeError``, called ``fn()``: a ``TypeError``
raised *inside* the user's function (a bug, or its way of refusing K) silently gave a model built without
the class count the user asked for.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from robustlab.errors import ModelLoadError
from robustlab.models.factory import call_factory


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    (tmp_path / "rl_factories_nc.py").write_text(textwrap.dedent('''
        from torch import nn

        def refuses(num_classes=10):
            if num_classes != 10:
                raise TypeError("this head only supports 10 classes")
            return nn.Linear(4, num_classes)

        def plain():
            return nn.Linear(4, 3)

        def keywords(**kw):
            return nn.Linear(4, kw.get("num_classes", 10))

        def positional_only(num_classes=10, /):
            return nn.Linear(4, num_classes)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "rl_factories_nc"
    sys.modules.pop("rl_factories_nc", None)


def test_a_type_error_inside_the_factory_is_reported_not_retried(factories) -> None:
    with pytest.raises(ModelLoadError, match="raised TypeError: this head only supports 10 classes"):
        call_factory(f"{factories}:refuses", 5)
    assert call_factory(f"{factories}:refuses", 10).out_features == 10


def test_num_classes_goes_where_it_is_accepted(factories) -> None:
    assert call_factory(f"{factories}:plain", 5).out_features == 3  # no such parameter: called without it
    assert call_factory(f"{factories}:keywords", 5).out_features == 5  # **kwargs takes it
    assert call_factory(f"{factories}:positional_only", 5).out_features == 10  # cannot be passed by name
    assert call_factory(f"{factories}:keywords", None).out_features == 10
