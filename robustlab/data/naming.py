"""Which data set is this? A name given once, never guessed silently.

Budgets (attack epsilons) and corruption protocols depend on the data set, but ``npz:`` and
``folder:`` data and state dicts loaded with ``--arch`` do not say which it is. Users name it in one
of three places, in this order of precedence, and any two that disagree are an error:

1. ``--dataset NAME`` on the command line;
2. the data: a built-in set names itself (``digits``, ``cifar10``, ``samples:mnist`` ...); a
   ``dataset`` string array in the npz (``np.savez(..., dataset="cifar10")``), or
   ``{"dataset": "cifar10"}`` in ``manifest.json`` at the root of an image folder;
3. the model's own default data set (zoo models, ``robustbench:`` models).

The name and where it came from are recorded in the scorecard (``data.dataset``,
``data.dataset_source``). The robustness budgets map it to a family (``cifar``, ``imagenet``,
``mnist``, ``digits``) and ``protocol: auto`` of the corruption check maps it to a protocol.
"""

from __future__ import annotations

import difflib

from ..errors import DataError, UnknownNameError

#: known data set names -> (budget family, corruption protocol for ``auto``)
KNOWN: dict[str, tuple[str | None, str]] = {
    "cifar10": ("cifar", "cifar-c"),
    "cifar100": ("cifar", "cifar-c"),
    "imagenet": ("imagenet", "imagenet-c"),
    "mnist": ("mnist", "cifar-c-small"),
    "fashion-mnist": ("mnist", "cifar-c-small"),
    "digits": ("digits", "cifar-c-small"),
    "svhn": (None, "cifar-c"),
}


#: (channels, height, width) of each named data set's images; ImageNet's size varies. Images may be larger
#: (CIFAR upsampled for an ImageNet-pretrained network), never smaller or of another channel count.
NATIVE_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "digits": (1, 8, 8),
}


#: classes of each named data set
CLASS_COUNTS: dict[str, int] = {"cifar10": 10, "cifar100": 100, "svhn": 10, "mnist": 10, "fashion-mnist": 10, "digits": 10, "imagenet": 1000}


def class_count_note(name: str | None, num_classes: int) -> str:
    """A warning when a model of ``num_classes`` classes is evaluated on the named data set of another class
    count (an ImageNet model on CIFAR labels: its predictions of the other classes all count as errors)."""
    want = CLASS_COUNTS.get(name or "")
    if want is None or want == num_classes:
        return ""
    return (f"the model has {num_classes} classes but {name} has {want}: labels are read as the model's class indices, so "
            f"{'predictions of its other classes count as errors' if num_classes > want else 'labels beyond its classes are refused'}; "
            "check --model, --data and --dataset.")


def check_images_fit(name: str | None, shape: tuple[int, ...], source: str) -> None:
    """Raise ``DataError`` when images of ``shape`` (C, H, W) cannot be the data set ``name`` (named by
    ``source``): another channel count, or smaller than its images; its budgets and corruption protocol
    would be applied to other data."""
    native = NATIVE_SHAPES.get(name or "")
    if native is None or len(shape) != 3:
        return
    c, h, w = (int(v) for v in shape)
    if c != native[0] or h < native[1] or w < native[2]:
        raise DataError(f"the data set is named {name} ({source}), whose images are {'x'.join(map(str, native))}, but these are "
                        f"{c}x{h}x{w}; name the data set they are (--dataset, or the data's own entry) or pass the right --data.")


def check_dataset_name(name: str) -> str:
    """``name`` normalised (lower case); unknown names raise with the closest known ones."""
    n = name.strip().lower()
    if n not in KNOWN:
        close = difflib.get_close_matches(n, KNOWN, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown data set name {name!r}.{hint} Known: {', '.join(KNOWN)}.")
    return n


#: where a name stored with npz / folder data comes from (the default ``data_source``)
DATA_ENTRY = "the data (npz 'dataset' entry or folder manifest.json)"


def resolve_dataset_name(cli: str | None, data: str | None, model: str | None, *, data_source: str = DATA_ENTRY,
                         data_is_model_default: bool = False) -> tuple[str | None, str]:
    """(name or None, where it came from) from the three places, checking that they agree.

    ``data`` is the name the data gives itself: stored with npz / folder data, or the built-in set's
    own name (``digits``, ``samples:cifar10`` -> ``cifar10``); ``data_source`` says which. ``model`` is
    the model's default data spec (``cifar10``, ``digits``, ``samples:cifar10`` ...); it counts only
    when it is, or ends with, a known name. With ``data_is_model_default`` (no --data: the model chose
    the data) a data name equal to the model's is recorded as the model's.
    """
    named: list[tuple[str, str]] = []
    if cli:
        named.append((check_dataset_name(cli), "--dataset"))
    tail = model.rsplit(":", 1)[-1].strip().lower() if model else ""
    if data:
        n = check_dataset_name(data)
        if not (data_is_model_default and n == tail):
            named.append((n, data_source))
    if tail in KNOWN:
        named.append((tail, "the model's default data set"))
    if not named:
        return None, "not named (pass --dataset, or store a 'dataset' entry in the npz / folder manifest.json)"
    first = named[0]
    for other in named[1:]:
        if other[0] != first[0] and other[1] != "the model's default data set":
            raise DataError(f"the data set is named {first[0]!r} by {first[1]} but {other[0]!r} by {other[1]}; name it once, consistently.")
    return first


def family(name: str | None) -> str | None:
    """Budget family of a known name (None when unknown or unnamed)."""
    return KNOWN.get(name or "", (None, ""))[0]


def auto_protocol(name: str | None) -> str | None:
    """The corruption protocol ``auto`` picks for a named data set (None: decide by image size)."""
    return KNOWN[name][1] if name in KNOWN else None
