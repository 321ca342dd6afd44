"""Give freed memory back to the operating system between batches.

PyTorch on a CPU allocates activations and gradients through the C library's ``malloc``. glibc
serves blocks of a few MB from its heaps once its dynamic mmap threshold has risen (it rises to the
size of every large block freed, up to 32 MB), and a heap only shrinks from its top: after a batch,
the activations it freed stay resident as holes between live blocks. Attacks with early stopping
make every iteration allocate tensors of a new size, so the holes rarely fit the next request and
the resident set grows batch after batch (measured: PGD on the CIFAR-10 ResNet-18, batch 128, grew
by 100-400 MB per batch, 1.3 GB over five batches). ``malloc_trim(0)`` returns every free page of
every heap to the system (``madvise(MADV_DONTNEED)``), so memory held between batches no longer
depends on how many batches came before.

That leaves the holes *inside* a batch. glibc raises its mmap threshold to the size of every large
block freed (up to 32 MB), after which activations and gradients of a few MB come from the heaps,
and where they land depends on everything allocated before: the peak of an attack batch kept
rising over a run although nothing was kept (AutoAttack on the CIFAR-10 ResNet-18, batches of 128:
1.46 GB in the first batch, 1.90 GB by the 16th, 2.05 GB by the 64th). :func:`bound_heap_growth`
therefore fixes the threshold (``MMAP_THRESHOLD``), so every block that large has its own mapping and
is unmapped when freed, and asks PyTorch to back those blocks with transparent huge pages
(``THP_MEM_ALLOC_ENABLE``).

The threshold was 2 MB at first, which was too low: oneDNN reorders a convolution's weights into a
scratch buffer of their size on every call (2.4-9.4 MB for the wide layers of a CIFAR ResNet-18)
through plain ``malloc``, outside PyTorch's huge-page path, and a fixed mmap threshold also fixes
glibc's trim threshold at 128 KB. Every call then mapped, faulted in and unmapped megabytes: a forward
pass at 2 rows took 36 ms instead of 13, an input gradient at 16 rows 211 ms instead of 117, which is
where AutoAttack spends its time on the points that survive. The threshold is now 16 MB and the trim
threshold ``TRIM_FACTOR`` times it, so buffers of a few MB stay in the heap and are reused: no page
faults in those passes, and the peak stays flat over a run except where a batch of a new size comes
(``bench/heap_threshold.py``, numbers in the README).

Elsewhere (macOS, musl, Windows) these functions do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from functools import lru_cache
from typing import Any, Callable, cast

log = logging.getLogger(__name__)


def _glibc(name: str, argtypes: list[Any]) -> Any:
    """The C library's function ``name`` with its argument types, or None (not Linux, not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    return cast("Callable[[int], int] | None", _glibc("malloc_trim", [ctypes.c_size_t]))


#: glibc's ``mallopt`` parameter numbers of M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks at least this large get their own mapping, unmapped when freed (bytes).
MMAP_THRESHOLD = 16 << 20
#: the top of a heap is given back once this many times the mmap threshold is free there (M_TRIM_THRESHOLD)
TRIM_FACTOR = 4
#: what :func:`bound_heap_growth` set in this process (recorded in the scorecard's environment).
_HEAP: dict[str, object] = {}


@lru_cache(maxsize=1)
def _mallopt() -> Callable[[int, int], int] | None:
    return cast("Callable[[int, int], int] | None", _glibc("mallopt", [ctypes.c_int, ctypes.c_int]))


def bound_heap_growth() -> dict[str, object]:
    """Fix glibc's mmap threshold (default ``MMAP_THRESHOLD``, 16 MB) and trim threshold (``TRIM_FACTOR`` times
    it) and turn on PyTorch's huge-page allocations, once, at the start of a command and before torch is
    imported; returns what was set.

    Left alone: in a process that has already imported torch (an embedding program, a test run
    keeps its allocator as it is); the threshold when ``MALLOC_MMAP_THRESHOLD_`` (glibc's own
    tunable) is set; the threshold where the kernel has no transparent huge pages (the fixed threshold
    would cost about 30% there) unless ``ROBUSTLAB_MMAP_THRESHOLD`` asks for it; everything with
    ``ROBUSTLAB_MMAP_THRESHOLD=0``.
    ``ROBUSTLAB_MMAP_THRESHOLD=<bytes>`` chooses another threshold and ``ROBUSTLAB_TRIM_THRESHOLD=<bytes>``
    another trim threshold; ``THP_MEM_ALLOC_ENABLE``, when set, is the user's.
    """
    if _HEAP:
        return dict(_HEAP)
    if "torch" in sys.modules:
        _HEAP.update(mmap_threshold=None, reason="torch was imported before the command started")
        return dict(_HEAP)
    env = os.environ.get("ROBUSTLAB_MMAP_THRESHOLD", "").strip()
    threshold = _env_bytes("ROBUSTLAB_MMAP_THRESHOLD", MMAP_THRESHOLD)
    if threshold <= 0:
        _HEAP.update(mmap_threshold=None, reason="ROBUSTLAB_MMAP_THRESHOLD=0")
        return dict(_HEAP)
    huge = os.environ.get("THP_MEM_ALLOC_ENABLE", "1") == "1" and _thp_mode() in ("always", "madvise")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        _HEAP.update(mmap_threshold=None, reason="MALLOC_MMAP_THRESHOLD_ is set (glibc's own setting applies)")
    elif not huge and not env:
        # without huge pages every fresh mapping costs page faults: 31% longer AutoAttack runs (bench)
        _HEAP.update(mmap_threshold=None, reason=f"no transparent huge pages; ROBUSTLAB_MMAP_THRESHOLD={MMAP_THRESHOLD} fixes the threshold anyway")
    else:
        fn = _mallopt()
        trim = max(0, _env_bytes("ROBUSTLAB_TRIM_THRESHOLD", TRIM_FACTOR * threshold))  # else glibc's 128 KB default stays
        ok = fn is not None and fn(_M_MMAP_THRESHOLD, threshold) == 1
        ok_trim = fn is not None and ok and fn(_M_TRIM_THRESHOLD, trim) == 1
        _HEAP.update(mmap_threshold=threshold if ok else None, trim_threshold=trim if ok_trim else None)
        if not ok:
            _HEAP["reason"] = "not glibc"
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read by PyTorch's CPU allocator
    _HEAP["torch_huge_pages"] = huge
    return dict(_HEAP)


def _env_bytes(name: str, default: int) -> int:
    """The number of bytes in environment variable ``name``, or ``default`` (unset, or not a number: warned)."""
    env = os.environ.get(name, "").strip()
    if not env:
        return default
    try:
        return int(env)
    except ValueError:
        log.warning("%s=%r is not a number of bytes; using %d", name, env, default)
        return default


def heap_settings() -> dict[str, object]:
    """What :func:`bound_heap_growth` set in this process ({} when it was not called)."""
    return dict(_HEAP)


def _thp_mode() -> str:
    """The kernel's transparent huge page mode (always / madvise / never), "" when unknown."""
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; True when that was possible.

    Cheap (a few ms): call it after each batch, never inside the attack's inner loop.
    """
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (0.0 where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024
