"""Readers of saved adversarial examples: the worst case over an epsilon sweep (:class:`WorstCase`) and
the examples of a ``minimal_norm`` check within a budget (:class:`MinimalAt`). Every shard they read is
checked against the sha256 in ``index.json`` (layout and writing: :mod:`robustlab.adversarial_examples`)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .adversarial_examples import INDEX, MINIMAL, load_index, read_shard
from .errors import RobustlabError


@dataclass(frozen=True)
class Batch:
    """Examples read back for some sample positions (all arrays aligned with ``positions``)."""

    positions: list[int]
    ids: list[str]
    y: np.ndarray
    x_adv: np.ndarray
    pred: np.ndarray
    success: np.ndarray  # counted as broken at this epsilon (worst case over the sweep)
    eps_used: np.ndarray  # the epsilon whose example is returned


class WorstCase:
    """Reads the examples one check counted at one epsilon, for any sample positions, shard by shard.

    Holds at most one shard per epsilon of the sweep at a time (the one covering the last position
    asked for), so memory does not grow with the number of samples.
    """

    def __init__(self, root: Path, check_id: str, eps: float) -> None:
        from .metric_keys import eps_segment

        doc = load_index(root)
        entry = doc["checks"].get(check_id)
        if entry is None or eps_segment(eps) not in entry.get("by_eps", {}):
            raise RobustlabError(f"no saved adversarial examples of check {check_id!r} at eps {eps:.4g} in {root / INDEX}.")
        self.root, self.check_id, self.eps = root, check_id, float(eps)
        sweep = sorted(float(e) for e in entry["epsilons"]) if entry.get("sweep", True) else [float(eps)]
        self.eps_list = [e for e in sweep if e <= self.eps and eps_segment(e) in entry["by_eps"]]
        self.entries = [entry["by_eps"][eps_segment(e)] for e in self.eps_list]
        self._cache: dict[int, tuple[int, int, dict[str, np.ndarray]]] = {}

    def _shard(self, k: int, pos: int) -> tuple[int, dict[str, np.ndarray]]:
        got = self._cache.get(k)
        if got is not None and got[0] <= pos < got[1]:
            return got[0], got[2]
        rows = self.entries[k]["shards"]
        j = bisect.bisect_right([int(r["start"]) for r in rows], pos) - 1
        if j < 0 or not int(rows[j]["start"]) <= pos < int(rows[j]["stop"]):
            raise RobustlabError(f"no saved adversarial example for sample {pos} of check {self.check_id!r}; rerun without --resume.")
        r = rows[j]
        arrays = read_shard(self.root / str(r["file"]), sha256=str(r["sha256"]))
        self._cache[k] = (int(r["start"]), int(r["stop"]), arrays)
        return int(r["start"]), arrays

    def read(self, positions: Sequence[int], ids: Sequence[str] | None = None) -> Batch:
        """The counted example of each sample position (worst case over the sweep's epsilons <= eps:
        the example of the largest such epsilon that broke the point, else this epsilon's output)."""
        out: dict[str, list[Any]] = {k: [] for k in ("ids", "y", "x_adv", "pred", "success", "eps")}
        last = len(self.eps_list) - 1
        for pos in positions:
            chosen = None
            for k in range(last, -1, -1):  # the largest epsilon that broke the point
                start, a = self._shard(k, pos)
                if bool(a["success"][pos - start]):
                    chosen = (k, start, a, True)
                    break
            if chosen is None:
                start, a = self._shard(last, pos)
                chosen = (last, start, a, False)
            k, start, a, broken = chosen
            i = pos - start
            out["ids"].append(str(a["ids"][i]))
            out["y"].append(int(a["y"][i]))
            out["x_adv"].append(a["x_adv"][i])
            out["pred"].append(int(a["pred"][i]))
            out["success"].append(broken)
            out["eps"].append(self.eps_list[k])
        if ids is not None and list(ids) != out["ids"]:
            raise RobustlabError(f"saved adversarial examples of check {self.check_id!r} belong to other samples than the evaluation data; rerun without --resume.")
        x = np.stack(out["x_adv"]) if out["x_adv"] else np.zeros((0,))
        return Batch(list(positions), out["ids"], np.asarray(out["y"], dtype=np.int64), x, np.asarray(out["pred"], dtype=np.int64),
                     np.asarray(out["success"], dtype=bool), np.asarray(out["eps"], dtype=np.float64))


class MinimalAt:
    """Reads a minimal-norm check's outcome at budget ``eps``, for any sample positions, holding one
    shard at a time: the minimal example where it was found and ``norm <= eps`` (the point counted
    broken), else the clean image (counted robust when correct; a clean error is its clean image)."""

    def __init__(self, root: Path, check_id: str, eps: float) -> None:
        entry = load_index(root)["checks"].get(check_id)
        if entry is None or entry.get("kind") != MINIMAL:
            raise RobustlabError(f"no saved minimal adversarial examples of check {check_id!r} in {root / INDEX}.")
        self.root, self.check_id, self.eps = root, check_id, float(eps)
        self.rows: list[dict[str, Any]] = list(entry[MINIMAL]["shards"])
        self._cache: tuple[int, int, dict[str, np.ndarray]] | None = None

    def _shard(self, pos: int) -> tuple[int, dict[str, np.ndarray]]:
        if self._cache is not None and self._cache[0] <= pos < self._cache[1]:
            return self._cache[0], self._cache[2]
        j = bisect.bisect_right([int(r["start"]) for r in self.rows], pos) - 1
        if j < 0 or not int(self.rows[j]["start"]) <= pos < int(self.rows[j]["stop"]):
            raise RobustlabError(f"no saved adversarial example for sample {pos} of check {self.check_id!r}; rerun without --resume.")
        r = self.rows[j]
        arrays = read_shard(self.root / str(r["file"]), sha256=str(r["sha256"]))
        self._cache = (int(r["start"]), int(r["stop"]), arrays)
        return int(r["start"]), arrays

    def read(self, positions: Sequence[int], ids: Sequence[str] | None = None, *, clean: np.ndarray) -> Batch:
        """``clean`` (len(positions), C, H, W): the clean images of ``positions``, returned where the
        minimal example is larger than ``eps``. ``success``: broken at ``eps`` by a valid example."""
        if len(clean) != len(positions):
            raise ValueError(f"{len(clean)} clean images for {len(positions)} positions")
        out: dict[str, list[Any]] = {k: [] for k in ("ids", "y", "x_adv", "pred", "success")}
        for pos, xc in zip(positions, clean):
            start, a = self._shard(pos)
            i = pos - start
            broken = bool(a["success"][i]) and float(a["norm"][i]) <= self.eps
            out["ids"].append(str(a["ids"][i]))
            out["y"].append(int(a["y"][i]))
            out["x_adv"].append(a["x_adv"][i] if broken else np.asarray(xc, dtype=a["x_adv"].dtype))
            out["pred"].append(int(a["pred"][i]) if broken or not bool(a["correct"][i]) else int(a["y"][i]))
            out["success"].append(broken)
        if ids is not None and list(ids) != out["ids"]:
            raise RobustlabError(f"saved adversarial examples of check {self.check_id!r} belong to other samples than the evaluation data; rerun without --resume.")
        x = np.stack(out["x_adv"]) if out["x_adv"] else np.zeros((0,))
        return Batch(list(positions), out["ids"], np.asarray(out["y"], dtype=np.int64), x, np.asarray(out["pred"], dtype=np.int64),
                     np.asarray(out["success"], dtype=bool), np.full(len(positions), self.eps, dtype=np.float64))
