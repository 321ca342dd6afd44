"""``robustlab evaluate --variants``: the same suite, seed and samples on a base model and each of
its compressed variants; one scorecard per variant, a side-by-side comparison and, for quantized
variants, attacks that are valid on integer models (:mod:`robustlab.compress.attacks`).

Layout of ``OUT``: ``base/`` and ``<variant>/`` (each a normal evaluate output folder),
``variants/<variant>.safetensors`` (variants compressed on the fly), ``variants.json`` and
``variants.txt`` (the comparison). The comparison is also stored in the base scorecard's
``run.variants`` so the base report renders a "variants" section.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..compress.attacks import integer_robustness
from ..compress.methods import CompressionError, CompressionSpec
from ..compress.quantize import QuantizedNet
from ..attacks.threat import Norm, budget_for, dataset_key
from ..checks.integer_attack import IntegerAttackParams
from ..data import load_dataset
from ..errors import printable
from ..metric_keys import legal_segment, per_eps
from ..models import load_model
from ..progress_lines import progress_log
from ..runner import RunConfig, prepare_data
from ..scorecard import CheckResult, Scorecard, Status
from ..seeding import derive_seed
from .compress import CompressConfig, compress
from .defend_comparison import headline_keys
from .evaluate import evaluate
from .variant_checks import CHECK_ID, integer_attack_result, measurements

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantOptions:
    """Where calibration data comes from, and the integer-model attack settings used when the suite
    has no ``integer_attack`` entry (an entry's params win: :class:`~robustlab.checks.integer_attack.IntegerAttackParams`)."""

    calibration_data: str | None = None
    attack_steps: int = 20
    square_queries: int = 1000
    latency_batch: int = 32


@dataclass(frozen=True)
class VariantRun:
    name: str
    model_spec: str
    out_dir: Path
    card: Scorecard


def variant_record(path: Path) -> dict[str, Any]:
    """The ``compression`` record in the header of the variant file ``path`` (tensors are not read);
    :class:`CompressionError` when ``path`` is not a file written by ``robustlab compress``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        rec = json.loads(meta.get("robustlab") or "{}").get("compression")
    except (SafetensorError, OSError, ValueError, AttributeError) as exc:
        raise CompressionError(f"variant file {printable(path)} is not a safetensors file written by robustlab compress ({type(exc).__name__}); pass a variant file or a method.") from exc
    if not isinstance(rec, dict):
        raise CompressionError(f"variant file {printable(path)} has no compression record (it was not written by robustlab compress); pass a variant file or a method.")
    from ..compress.variant import check_record

    check_record(rec, source=printable(path))  # a mistyped base_sha256 would skip the base check below
    return rec


def _short(sha: str) -> str:
    return sha[:12]


def check_base(base_sha256: str | None, base_spec: str, path: Path, record: dict[str, Any], *, base_format: str = "") -> str:
    """Whether the variant file ``path`` (its ``record``) was compressed from the evaluated base model
    (``base_sha256``): refused (:class:`CompressionError`) when the recorded ``base_sha256`` differs;
    otherwise the note recorded in the variant's scorecard (``run.base_model_check``), saying when the
    check could not be made (and logged as a warning then). A ``factory`` base has no file: its sha256
    is of its state dict, which a variant's record (the sha256 of its base's file) never is."""
    recorded = record.get("base_sha256")
    recorded = recorded if isinstance(recorded, str) and recorded else None
    if base_format == "factory":
        base_sha256 = None
    if recorded and base_sha256:
        if recorded != base_sha256:
            made_from = printable(record.get("base_spec") or "another model")
            raise CompressionError(f"variant {printable(path)} was compressed from {made_from} (sha256 {_short(recorded)}), not from {printable(base_spec)} (sha256 {_short(base_sha256)}); "
                                   "its accuracy change would not be the compression's: evaluate it beside its own base model, or compress this one.")
        return f"checked: the variant's recorded base sha256 {_short(recorded)} is the base model's"
    if base_format == "factory":
        why = f"the base model {printable(base_spec)} is built by code and has no file sha256 to compare"
    else:
        why = f"the base model {printable(base_spec)} has no sha256" if not base_sha256 else "the variant records no base sha256"
    note = f"not checked: {why}, so it is not known that {printable(path.name)} was compressed from this model"
    log.warning("variant %s: %s", printable(path), note)
    return note


def resolve_variants(cfg: RunConfig, items: list[str], opts: VariantOptions, *, notes: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(name, model spec)`` per item: an existing variant file, or a method compressed now into ``OUT/variants/``.

    Every item is checked before anything is compressed: an empty list, a path that is not a file, an
    unknown method and a name used twice are usage errors (:class:`CompressionError`), and so is a
    variant file compressed from another model than ``cfg.model_spec`` (its recorded base sha256).
    ``notes`` (when given) receives, per variant name, how its base model was checked."""
    if not items:
        raise CompressionError("--variants names no variant; pass methods (fp16,int8-static,prune-unstructured:0.5) and/or variant files, comma-separated.")
    plan: list[tuple[str, Path | None, CompressionSpec | None, str]] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_file():
            name, path, method = legal_segment(p.stem), p, None
        else:
            method = CompressionSpec.parse(item)  # a path that is not a file is said so (CompressionSpec.parse)
            name, path = legal_segment(method.name.replace(":", "_")), None
        if name == "base" or name in {n for n, *_ in plan}:
            fix = f"rename the file {printable(item)}" if path is not None else "list each variant once"
            raise CompressionError(f"variant name {name!r} is used twice (or is 'base'); {fix}. Nothing was compressed.")
        plan.append((name, path, method, item))
    files = [(name, path) for name, path, _, _ in plan if path is not None]
    if files:
        base = load_model(cfg.model_spec, replace(cfg.load, device="cpu"))
        for name, path in files:
            note = check_base(base.info.sha256, cfg.model_spec, path, variant_record(path), base_format=base.info.format)
            if notes is not None:
                notes[name] = note
    out: list[tuple[str, str]] = []
    for name, path, method, _ in plan:
        if path is not None:
            out.append((name, str(path)))
            continue
        assert method is not None
        dest = cfg.out_dir / "variants" / f"{name}.safetensors"
        compress(CompressConfig(cfg.model_spec, cfg.load, method, dest, calibration_data=opts.calibration_data, data_root=cfg.data_root, download=cfg.download, batch_size=cfg.batch_size))
        if notes is not None:
            notes[name] = "checked: compressed from the base model in this run"
        out.append((name, str(dest)))
    return out


def attack_entries(cfg: RunConfig, opts: VariantOptions) -> list[tuple[str, IntegerAttackParams]]:
    """``(id, params)`` of every ``integer_attack`` entry of the suite; without one, the default
    entry with ``opts``' settings."""
    found = [(e.id, e.params) for e in cfg.suite.entries if e.check == CHECK_ID]
    return found or [(CHECK_ID, IntegerAttackParams(pgd_steps=opts.attack_steps, square_queries=opts.square_queries))]


def _attack_check(cfg: RunConfig, run: VariantRun, base_card: Scorecard, check_id: str, p: IntegerAttackParams) -> CheckResult:
    t0 = time.perf_counter()
    variant = load_model(run.model_spec, replace(cfg.load, device="cpu"))
    base = load_model(cfg.model_spec, replace(cfg.load, device="cpu"))
    ds = str(run.card.data.get("dataset") or variant.info.dataset or "")
    budget = budget_for(dataset_key(ds) or "", Norm.LINF) if ds else None
    if budget is None:
        return CheckResult(check_id, CHECK_ID, status=Status.SKIPPED, reason=f"no Linf budget is known for data set {ds or '(unnamed)'}; name it with --dataset")
    raw = load_dataset(str(run.card.data["spec"]), split="test", root=cfg.data_root, download=cfg.download, input_shape=variant.input_shape).limit(cfg.limit)
    raw = raw.match_classes(base.info.class_names, base.num_classes)  # the labels the base run used (folder: by class name)
    data = prepare_data(variant, raw)
    eps = budget.eps * (variant.bounds[1] - variant.bounds[0])
    x, y = data.images(), data.y
    seeds = [derive_seed(cfg.seed, CHECK_ID, i) for i in data.ids]
    ir = integer_robustness(variant, base, x, y, eps, seeds=seeds, steps=p.pgd_steps, restarts=p.pgd_restarts, square_queries=p.square_queries, batch_size=cfg.batch_size)
    name = per_eps("robust", eps)
    for c in run.card.checks:  # the suite's own attacks at this budget (already scored on the integer model) join the worst case
        flags = c.per_sample.get(name)
        if c.check != CHECK_ID and c.status is Status.OK and isinstance(flags, list) and len(flags) == len(data) and run.card.data.get("ids") == list(data.ids):
            ir.robust[f"suite_{c.id}"] = torch.tensor([bool(f) for f in flags])
    params = {"norm": "linf", "eps_label": budget.label, "pgd_steps": p.pgd_steps, "pgd_restarts": p.pgd_restarts, "square_queries": p.square_queries, "transfer_from": cfg.model_spec}
    return integer_attack_result(ir, params=params, seconds=time.perf_counter() - t0, check_id=check_id)


def _put(card: Scorecard, result: CheckResult) -> None:
    """``result`` in place of the suite entry's placeholder with its id (recorded as skipped by the run), else appended."""
    for i, c in enumerate(card.checks):
        if c.id == result.id:
            card.checks[i] = result
            card.timings[f"check/{result.id}"] = result.seconds
            return
    card.checks.append(result)


def _row(key: str, base: Scorecard, card: Scorecard) -> dict[str, Any]:
    def ci(c: Scorecard) -> list[float] | None:
        iv = c.intervals().get(key)
        return None if iv is None else [iv.low, iv.high]

    bv, vv = base.metrics().get(key), card.metrics().get(key)
    delta = None if bv is None or vv is None or math.isnan(bv) or math.isnan(vv) else vv - bv
    return {"metric": key, "base": bv, "base_ci": ci(base), "variant": vv, "variant_ci": ci(card), "delta": delta}


def comparison(base: VariantRun, runs: list[VariantRun], sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The side-by-side comparison: headline metrics with intervals, McNemar per paired flag list, measurements."""
    from ..gates.compare import compare_scorecards

    out: dict[str, Any] = {"base": {"spec": base.model_spec, "scorecard": str(base.out_dir / "scorecard.json"), **sizes["base"]}, "variants": []}
    for r in runs:
        keys = list(dict.fromkeys(headline_keys(base.card) + headline_keys(r.card)))
        cmp = compare_scorecards(base.card, r.card)
        mcnemar = [{"flags": f.name, "lost": f.result.lost, "gained": f.result.gained, "n": f.result.n, "p_two_sided": f.result.p_two_sided} for f in cmp.flags]
        audit = [{"check": c.id, "name": a.name, "verdict": a.verdict.value, "message": a.message} for c in r.card.checks for a in c.audit if a.verdict.value != "valid"]
        base_check = str(r.card.run.get("base_model_check") or "")
        if base_check.startswith("not checked"):  # the base model of a variant file could not be confirmed: shown beside the audit
            audit.append({"check": "variant", "name": "base_model", "verdict": "unknown", "message": base_check})
        not_run = [{"check": c.id, "status": c.status.value, "reason": c.reason} for c in r.card.checks if c.status is not Status.OK]
        out["variants"].append({"name": r.name, "spec": r.model_spec, "scorecard": str(r.out_dir / "scorecard.json"), "compression": r.card.model.get("extra", {}).get("compression"),
                                **sizes[r.name], "metrics": [_row(k, base.card, r.card) for k in keys], "mcnemar_vs_base": mcnemar, "audit": audit, "not_run": not_run})
    return out


def format_comparison(cmp: dict[str, Any]) -> str:
    def num(v: Any, signed: bool = False) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:+.4f}" if signed else f"{v:.4f}")

    lines = []
    head = ["model", "file bytes", "deployed bytes", "sparsity", "ms/image"]
    rows = [["base", *[str(cmp["base"].get(k)) for k in ("file_bytes", "deployed_bytes")], num(cmp["base"].get("weight_sparsity")), num(cmp["base"].get("cpu_latency_ms_per_image"))]]
    rows += [[v["name"], str(v.get("file_bytes")), str(v.get("deployed_bytes")), num(v.get("weight_sparsity")), num(v.get("cpu_latency_ms_per_image"))] for v in cmp["variants"]]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in [head] + rows] + [""]
    for v in cmp["variants"]:
        lines.append(f"== {v['name']} vs base")
        for m in v["metrics"]:
            lines.append(f"  {m['metric']}: base {num(m['base'])}  {v['name']} {num(m['variant'])}  delta {num(m['delta'], True)}")
        for f in v["mcnemar_vs_base"]:
            lines.append(f"  McNemar {f['flags']}: {f['lost']} lost, {f['gained']} gained of {f['n']}, p={f['p_two_sided']:.3g}")
        lines += [f"  audit {a['check']}/{a['name']}: {a['verdict']}: {a['message']}" for a in v["audit"]]
        lines += [f"  {n['check']}: {n['status']}: {n['reason']}" for n in v["not_run"]]
    return "\n".join(lines) + "\n"


def evaluate_variants(cfg: RunConfig, items: list[str], opts: VariantOptions) -> tuple[VariantRun, list[VariantRun], dict[str, Any]]:
    """Evaluate the base and every variant with ``cfg``'s suite, seed and samples; returns the runs and the comparison."""
    notes: dict[str, str] = {}
    specs = resolve_variants(cfg, items, opts, notes=notes)
    base = VariantRun("base", cfg.model_spec, cfg.out_dir / "base", evaluate(replace(cfg, out_dir=cfg.out_dir / "base")))
    data_spec = cfg.data_spec or str(base.card.data.get("spec") or "") or None
    runs: list[VariantRun] = []
    for name, spec in specs:
        progress_log.info("variant %s: %s", name, spec)
        vcfg = replace(cfg, model_spec=spec, out_dir=cfg.out_dir / name, data_spec=data_spec, dataset=cfg.dataset or base.card.data.get("dataset"))
        card = evaluate(vcfg)
        card.run["base_model_check"] = notes.get(name, "not checked")
        run = VariantRun(name, spec, vcfg.out_dir, card)
        if isinstance(load_model(spec, replace(cfg.load, device="cpu")).net, QuantizedNet):
            for check_id, params in attack_entries(cfg, opts):
                try:
                    result = _attack_check(vcfg, run, base.card, check_id, params)
                except (RuntimeError, ValueError) as exc:  # record why instead of crashing the comparison
                    result = CheckResult(check_id, CHECK_ID, status=Status.ERROR, reason=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
                _put(card, result)
        card.write(vcfg.out_dir / "scorecard.json")
        runs.append(run)
    raw = load_dataset(str(base.card.data["spec"]), split="test", root=cfg.data_root, download=cfg.download,
                       input_shape=base.card.model.get("input_shape")).limit(cfg.limit)
    sizes: dict[str, dict[str, Any]] = {}
    for r in [base, *runs]:  # latency measured in this process, one model after the other, same images and threads
        m = load_model(r.model_spec, replace(cfg.load, device="cpu"))
        x = prepare_data(m, raw).images(slice(0, min(len(raw), opts.latency_batch)))
        sizes[r.name] = measurements(m, m.info.path, x)
    cmp = comparison(base, runs, sizes)
    (cfg.out_dir / "variants.json").write_text(json.dumps(cmp, indent=1, default=str))
    (cfg.out_dir / "variants.txt").write_text(format_comparison(cmp))
    base.card.run["variants"] = json.loads(json.dumps(cmp, default=str))
    base.card.write(base.out_dir / "scorecard.json")
    return base, runs, cmp


__all__ = ["VariantOptions", "VariantRun", "check_base", "comparison", "evaluate_variants", "format_comparison", "resolve_variants", "variant_record"]
