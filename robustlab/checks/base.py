"""The check contract: a suite entry names a check and its parameters; the runner validates the
parameters before any model is loaded, then calls :meth:`Check.run` with a :class:`RunContext`.

A check returns a :class:`~robustlab.scorecard.CheckResult`. It never logs to MLflow and never renders.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import logging
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Iterator, Sequence, TypeVar, cast

from ..errors import SuiteError
from ..parsing import as_integer, parse_fraction
from ..registry import Registry
from ..scorecard import CheckResult
from ..seeding import reseed_model_rng

if TYPE_CHECKING:
    import torch

    from ..distributed import DistInfo

    from ..data.base import Dataset
    from ..models.wrapper import RobustModel
    from ..ood.data import RunData
    from ..store import ResultStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: All checks, by suite name. Built-in check modules in ``robustlab.checks`` register themselves on
#: import; third-party checks come through the ``robustlab.checks`` entry-point group.
CHECKS: "Registry[type[Check[Any]]]" = Registry("check", group="robustlab.checks", package="robustlab.checks")


@dataclass(frozen=True)
class Params:
    """Base class of check parameters: a frozen dataclass with defaults.

    Subclasses add fields with defaults and may override :meth:`validate` to reject impossible
    budgets with a :class:`SuiteError`.
    """

    def validate(self) -> None:  # pragma: no cover - default accepts everything
        return None


def validate_budgets(prefix: str, epsilons: Sequence[float] | None, primary_eps: float | None) -> None:
    """Refuse (:class:`SuiteError`) an attack check's ``epsilons`` / ``primary_eps`` that are not positive
    finite numbers, or whose metric keys would merge; ``prefix`` names the check in the message."""
    if epsilons is not None and (not epsilons or any(not (e > 0 and math.isfinite(e)) for e in epsilons)):
        raise SuiteError(f"{prefix}epsilons must be a non-empty list of positive numbers (e.g. [2/255, 8/255]), got {list(epsilons)}.")
    if primary_eps is not None and not (primary_eps > 0 and math.isfinite(primary_eps)):
        raise SuiteError(f"{prefix}primary_eps must be a positive number, got {primary_eps}.")
    if epsilons is not None:
        from .. import metric_keys as mk

        extra = [primary_eps] if primary_eps is not None else []
        refuse_key_clash(f"{prefix}epsilons" + (" and primary_eps" if extra else ""), [*epsilons, *extra], mk.eps_segment)


def refuse_key_clash(what: str, values: Iterable[float], segment: Callable[[float], str]) -> None:
    """Raise :class:`SuiteError` when two different values of the list ``what`` give the same
    metric-key ``segment`` (their results would merge into one key)."""
    from ..metric_keys import key_clash

    clash = key_clash(values)
    if clash is not None:
        a, b = clash
        raise SuiteError(f"{what}: {a!r} and {b!r} both give the metric key segment {segment(a)} (keys keep 4 significant digits), "
                         "so their results would merge; drop one or make them differ within 4 significant digits.")


@dataclass
class RunContext:
    """Everything a check may use. Built by the runner.

    Attributes:
        model: the wrapped model (on ``device``), inputs in ``model.bounds``.
        data: the evaluation data, already in ``model.bounds``, labels checked.
        seed: the run seed; derive all randomness from it (``robustlab.seeding``).
        batch_size: the user's batch size.
        out_dir: the run's output folder (checks may write large per-sample artefacts there).
        store: per-batch result store for resumable work (keyed by check id and parameters).
        load_data: ``load_data(spec, split)`` returns another data set in the model's bounds, e.g. OOD
            sets or the training split for fitting detectors.
        progress: wraps an iterable in a progress bar (no-op with ``--quiet``).
    """

    model: "RobustModel"
    data: "Dataset"
    seed: int
    batch_size: int
    device: "torch.device"
    out_dir: Path
    store: "ResultStore"
    load_data: Callable[..., "Dataset"]
    progress: Callable[..., Any]
    data_spec: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, CheckResult] = field(default_factory=dict)  # results of earlier checks, by id
    dist: "DistInfo" = field(default_factory=lambda: _single())
    fast_model: "torch.nn.Module | None" = None  # bf16 autocast view for attack iterations
    effective_batch_size: int | None = None  # set when out-of-memory forced smaller batches

    def track(self, it: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
        return iter(self.progress(it, total=total, desc=desc))

    def map_batches(self, scope: str, n: int, fn: Callable[[int, int], Any], *, batch_size: int | None = None, desc: str = "") -> list[Any]:
        """Run ``fn(start, stop)`` on every batch ``[start, stop)`` of ``range(n)``; return the
        results in order.

        This is how checks should do their per-sample work: each result (JSON-serialisable) is
        stored under ``scope`` as soon as it is computed, so ``--resume`` skips finished batches;
        under torchrun the batches are dealt round-robin to the ranks and the results exchanged,
        so every rank returns the complete list. ``fn`` must depend only on the samples of its
        batch (seed per sample), never on which batches exist.
        """
        from ..distributed import all_gather_object
        from ..memory import release_free_memory

        bs = int(batch_size or self.batch_size)
        starts = list(range(0, n, bs))
        mine = [s for i, s in enumerate(starts) if i % self.dist.world_size == self.dist.rank]
        done: dict[int, Any] = {}
        failure: Exception | None = None
        try:
            for s in self.track(mine, total=len(mine), desc=desc or scope.split("#")[0]):
                key = f"{s}:{min(s + bs, n)}"
                value = self.store.get(scope, key)
                if value is None:
                    reseed_model_rng(self.seed, scope, key)  # the batch's model randomness does not depend on which batches ran before
                    value = self._call_with_backoff(fn, s, min(s + bs, n))
                    self.store.put(scope, key, value)
                    release_free_memory()  # the batch's freed tensors must not stay resident (issue 21)
                done[s] = value
        except Exception as exc:
            if not self.dist.enabled:
                raise
            failure = exc  # the other ranks must hear of it, or they wait in the gather below for ever
        if self.dist.enabled:
            parts = all_gather_object({"done": {} if failure else done, "failure": _describe_failure(failure)}, self.dist)
            failed = [(r, part["failure"]) for r, part in enumerate(parts) if part["failure"] is not None]
            if failed:  # every rank raises, so every rank records the same outcome and stays in step
                if failure is not None:
                    raise failure
                raise _rebuild_failure(*failed[0])
            for part in parts:
                for s, value in part["done"].items():
                    if s not in done:
                        done[s] = value
                        self.store.put(scope, f"{s}:{min(s + bs, n)}", value)
        return [done[s] for s in starts]

    def _call_with_backoff(self, fn: Callable[[int, int], Any], start: int, stop: int) -> Any:
        """Call ``fn``; on a CUDA out-of-memory error split the batch in halves and merge the
        results (dicts of per-sample lists are concatenated). Per-sample seeding keeps the result
        unchanged; the smallest batch size used is recorded as ``effective_batch_size``."""
        import torch

        try:
            return fn(start, stop)
        except torch.cuda.OutOfMemoryError:
            if stop - start <= 1:
                raise
            torch.cuda.empty_cache()
            mid = (start + stop) // 2
            self.effective_batch_size = min(self.effective_batch_size or stop - start, mid - start)
            log.warning("out of memory on a batch of %d; retrying in halves", stop - start)
            return _merge_halves(self._call_with_backoff(fn, start, mid), self._call_with_backoff(fn, mid, stop))

    def run_data(self) -> "RunData":
        """What the OOD/uncertainty data helpers need of the run (they never see the context itself)."""
        from ..ood.data import RunData

        lo, hi = self.model.bounds
        return RunData(load=self.load_data, model_bounds=(float(lo), float(hi)), eval_spec=self.data_spec, eval_ids=self.data.ids,
                       fit_spec=str(self.options.get("ood_fit_data") or "") or None)

    @property
    def attack_model(self) -> "torch.nn.Module":
        """The model attack iterations run on: ``model`` itself, or its bf16-autocast view when the
        run asked for ``--precision bf16`` (then every final adversarial example must be re-verified
        on ``model`` in fp32, and the number that flipped reported)."""
        return self.fast_model if self.fast_model is not None else self.model


def _describe_failure(exc: Exception | None) -> dict[str, Any] | None:
    """What another rank needs to raise the same kind of error (exceptions themselves may not pickle)."""
    if exc is None:
        return None
    return {"module": type(exc).__module__, "name": type(exc).__qualname__, "message": str(exc), "errno": getattr(exc, "errno", None)}


def _rebuild_failure(rank: int, d: dict[str, Any]) -> Exception:
    """The error a rank raises when another rank's batch failed: the same robustlab error class (so a
    data or model-output error still stops the run with exit 2 on every rank), an ``OSError`` with the
    same errno (so a full disk is still a disk failure), otherwise a ``RuntimeError`` naming the rank."""
    from .. import errors

    msg = f"on rank {rank}: {d['message']}"
    cls = getattr(errors, d["name"], None) if d["module"] == errors.__name__ else None
    if isinstance(cls, type) and issubclass(cls, errors.RobustlabError):
        try:
            return cast(Exception, cls(msg))
        except TypeError:  # a subclass with another constructor
            pass
    if d.get("errno") is not None:
        return OSError(d["errno"], msg)
    return RuntimeError(f"rank {rank} failed: {d['name']}: {d['message']}")


def _merge_halves(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return {k: _merge_halves(a[k], b[k]) for k in a}
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a + b  # per-batch counts
    raise TypeError("batch results must be (dicts of) per-sample lists to be split on out-of-memory")


_ParamsBase = Params


def _single() -> "DistInfo":
    from ..distributed import DistInfo

    return DistInfo()


P = TypeVar("P", bound=Params)


class Check(ABC, Generic[P]):
    """Base class of all checks, generic over its parameters (``Check[PGDParams]``).

    Subclasses set ``name`` (registry name), ``family`` (first part of metric keys, e.g.
    ``adversarial``), ``Params`` (a :class:`Params` dataclass, the ``P`` of ``Check[P]``) and
    implement :meth:`run`. Enum-typed fields are converted from suite strings once, in
    :meth:`parse_params`.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: families of checks whose outputs this check reads (the runner runs it after them when the
    #: run saves adversarial examples)
    runs_after: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, id: str, params: P) -> None:
        self.id = id
        self.params: P = params

    @classmethod
    def parse_params(cls, raw: dict[str, Any] | None, *, where: str = "") -> "_ParamsBase":
        """Validate raw YAML parameters against ``cls.Params``: unknown keys and wrong types fail."""
        raw = dict(raw or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            import difflib

            hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, fields, 1)[0]!r}?)" if difflib.get_close_matches(u, fields, 1) else repr(u) for u in unknown]
            raise SuiteError(f"{where}unknown parameter {', '.join(hints)} for check {cls.name!r}; known: {', '.join(sorted(fields)) or 'none'}.")
        hints_t = typing.get_type_hints(cls.Params)
        values: dict[str, Any] = {}
        for k, v in raw.items():
            values[k] = coerce_param(v, hints_t.get(k, Any), f"{where}{cls.name}.{k}")
        try:
            p = cls.Params(**values)
        except TypeError as exc:
            raise SuiteError(f"{where}invalid parameters for check {cls.name!r}: {exc}.") from exc
        try:
            p.validate()
        except SuiteError as exc:
            raise SuiteError(f"{where}{exc}") from exc
        return p

    @abstractmethod
    def run(self, ctx: RunContext) -> CheckResult:
        """Run the check and return its result (metrics under ``<family>/...`` slash keys)."""

    def new_result(self) -> CheckResult:
        raw = dataclasses.asdict(self.params)
        return CheckResult(id=self.id, check=self.name, params={k: v.value if isinstance(v, enum.Enum) else v for k, v in raw.items()})


def coerce_param(v: Any, tp: Any, where: str) -> Any:
    """Light type checking of YAML values against dataclass annotations."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if v is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_param(v, a, where)
            except SuiteError as e:
                errs.append(str(e))
        raise SuiteError(errs[0] if errs else f"{where}: invalid value {v!r}.")
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            v = [v]
        inner = args[0] if args else Any
        out = [coerce_param(e, inner, where) for e in v]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(v, dict):
            raise SuiteError(f"{where} must be a mapping, got {v!r}.")
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(v, tp):
            return v
        parse = getattr(tp, "parse", None)
        try:
            return parse(v) if parse is not None else tp(v)
        except (ValueError, SuiteError) as exc:
            raise SuiteError(f"{where} must be one of {', '.join(str(m.value) for m in tp)}, got {v!r}.") from exc
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise SuiteError(f"{where} must be a number, got {v!r}.")
        try:
            f = float(parse_fraction(v) if isinstance(v, str) else v)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise SuiteError(f"{where} must be a number such as 0.031 or 8/255, got {v!r}.") from exc
        if not math.isfinite(f):  # an infinite step size or budget is a NaN iterate or an overflow later
            raise SuiteError(f"{where} must be a finite number such as 0.031 or 8/255, got {v!r}.")
        return f
    if tp is int:  # YAML 1.1 reads 1e5 as the string '1e5' and 1.0e+5 as a float: both mean 100000
        try:
            return as_integer(v)
        except ValueError as exc:
            raise SuiteError(f"{where} must be an integer such as 100000 or 1e5; {exc}.") from exc
    if tp is bool:
        if not isinstance(v, bool):
            raise SuiteError(f"{where} must be true or false, got {v!r}.")
        return v
    if tp is str:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise SuiteError(f"{where} must be a string, got {v!r}.")
        return str(v)
    return v
