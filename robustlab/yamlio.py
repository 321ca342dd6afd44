"""Strict YAML in, for suites and gate policies (torch-free).

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping, so a policy holding
``threshold: 0.9`` and then ``threshold: 0.1`` would gate at 0.1 without a word. Here a repeated key is
an error (raised as ``yaml.YAMLError`` with its line), as a repeated key is in a scorecard's JSON.

Aliases are checked before anything is built: a document whose aliases expand to more than
:data:`MAX_EXPANDED_NODES` values (a "billion laughs" file: ten aliases of ten aliases of ...) or that
refers to itself (``&a [*a]``) is refused as ``yaml.YAMLError``. PyYAML builds such a document cheaply,
sharing the repeated parts, but the first ``str()`` or JSON dump of it then ran for ever and ate the memory.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_EXPANDED_NODES", "describe_yaml_error", "safe_load_strict"]

#: The most values (scalars, lists, mappings) a suite or policy may hold once its aliases are expanded;
#: real files hold hundreds.
MAX_EXPANDED_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key, and aliases that expand
    past :data:`MAX_EXPANDED_NODES` values or refer to themselves."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _refuse_alias_bomb(node)
        return self.construct_document(node)


def _refuse_alias_bomb(root: yaml.Node) -> None:
    """Raise ``yaml.YAMLError`` when the node graph under ``root`` expanded as a tree would hold more
    than :data:`MAX_EXPANDED_NODES` nodes, or has a cycle. Iterative (a deeply nested file does not
    recurse here) and linear in the number of distinct nodes (an alias's size is counted once)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if size[key] > MAX_EXPANDED_NODES:
                mark = node.start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values; write the values out or use fewer aliases", mark)
            continue
        if key in size:
            continue
        if key in on_path:
            mark = node.start_mark
            raise yaml.composer.ComposerError(None, None, f"an alias refers to a value that contains it; such a value never ends", mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in reversed(kids) if id(k) not in size)


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
            raise yaml.constructor.ConstructorError(None, None, f"key {k!r} appears twice in one mapping", mark)
        seen.add(k)
    out: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def safe_load_strict(text: str) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` on a key repeated in one mapping."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def describe_yaml_error(exc: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error in ``text``: ``"line 5, column 1: expected ',' or ']', but got '<stream
    end>' (in the flow sequence that starts at line 4, column 16)"``. PyYAML's own text spans several
    lines, quotes the source line with a caret and calls the file ``"<unicode string>"``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a control character (PyYAML reads only printable text)
        pos = int(exc.position)
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return f"line {line}, column {col}: character {shown} is not allowed in YAML ({exc.reason}); remove it"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else "an unknown line: "
    what = str(problem or getattr(exc, "context", None) or exc)
    context, cmark = str(getattr(exc, "context", None) or ""), getattr(exc, "context_mark", None)
    for lead in ("while parsing a ", "while scanning a "):  # "while parsing a flow sequence": where the unfinished part starts
        if problem and context.startswith(lead) and cmark is not None and mark is not None and (cmark.line, cmark.column) != (mark.line, mark.column):
            what += f" (in the {context[len(lead):]} that starts at line {cmark.line + 1}, column {cmark.column + 1})"
    return " ".join(f"{where}{what}".split())


def load_or_raise(text: str, *, what: str, error: type[Exception], fix: str) -> Any:
    """:func:`safe_load_strict` of ``text``, a YAML problem raised as one-line ``error``: ``"{what} is not
    valid YAML at line L, column C: ...; {fix}."`` or ``"{what} nests too deeply; fix the file."``."""
    try:
        return safe_load_strict(text)
    except RecursionError as exc:
        raise error(f"{what} nests too deeply; fix the file.") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} is not valid YAML at {describe_yaml_error(exc, text)}; {fix}.") from exc
