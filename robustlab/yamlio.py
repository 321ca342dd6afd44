"""Strict YAML in, for suites and gate policies (torch-free).

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping, so a policy holding
``threshold: 0.9`` and then ``threshold: 0.1`` would gate at 0.1 without a word. Here a repeated key is
an error (raised as ``yaml.YAMLError`` with its line), as a repeated key is in a scorecard's JSON.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["safe_load_strict"]


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor``: explicit keys may override merged ones
            continue
        k = loader.construct_object(key_node, deep=deep)
        try:
            repeated = k in seen
        except TypeError:  # an unhashable key: SafeLoader's own error follows
            break
        if repeated:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"key {k!r} appears twice in one mapping (line {mark.line + 1})", mark)
        seen.add(k)
    out: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def safe_load_strict(text: str) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` on a key repeated in one mapping."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
