"""``robustlab certify``: randomized-smoothing certification of one model, as a one-check suite.

The command parses its options into :class:`~robustlab.pipelines.certify.CertifyOptions` and runs
the certify pipeline (a one-check suite through the evaluate pipeline), so the scorecard
(``OUT/scorecard.json``), resume, tracking and the report work as for ``robustlab evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..metric_keys import child, parse, sigma_segment
from .common import float_list_option, run_settings, data_options, default_out_dir, load_options_from, model_options, output_lock, run_options, user_errors, integer, number


@click.command("certify")
@model_options
@data_options
@click.option("--sigma", "sigmas", multiple=True, type=number(), help="Gaussian noise level in units of the input range (as pixel values in [0, 1]; scaled by the model's bounds like epsilons); repeat for several (default: the data set's standard levels).")
@click.option("--n", "n", type=integer(1), default=100_000, show_default=True, help="Estimation samples per point (the cap with --sampling adaptive).")
@click.option("--sampling", type=click.Choice(["fixed", "adaptive"]), default="fixed", show_default=True,
              help="fixed: Cohen et al.'s n samples; adaptive: anytime-valid confidence sequence, stops once every --radii answer is decided.")
@click.option("--settle-wrong/--no-settle-wrong", default=True, show_default=True,
              help="With --sampling adaptive, stop a point whose selected class is not its label once its abstention is decided "
                   "(its class, abstention and majority are unchanged; its per-sample radius and sample count shrink).")
@click.option("--n0", type=integer(1), default=100, show_default=True, help="Selection samples per point.")
@click.option("--alpha", type=number(), default=0.001, show_default=True, help="Failure probability of each certificate.")
@click.option("--num-points", type=integer(0), default=500, show_default=True, help="Certify this many evenly spaced test points (0 = all).")
@click.option("--radii", default="0,0.25,0.5,0.75,1,1.5,2", show_default=True, help="Comma-separated L2 radii for the certified-accuracy table.")
@click.option("--predict-n", type=integer(0), default=0, help="Samples for PREDICT (smoothed clean accuracy); 0 = --n.")
@click.option("--attack/--no-attack", default=True, show_default=True, help="Attack the smoothed classifier (SmoothAdv-PGD) for the robustness interval.")
@click.option("--interval-radii", default="0.25,0.5,1", show_default=True, help="Comma-separated L2 radii of the robustness interval.")
@click.option("--base-attack/--no-base-attack", default=True, show_default=True, help="Also attack the base model with L2 PGD (worst case of both attacks).")
@click.option("--attack-steps", type=integer(1), default=20, show_default=True)
@click.option("--attack-samples", type=integer(1), default=32, show_default=True, help="Noise samples per attack step.")
@click.option("--attack-n", type=integer(1), default=1000, show_default=True,
              help="Noise samples that estimate the smoothed prediction at each attack point (the interval's upper end).")
@click.option("--collapse-ratio", type=number(0, 1), default=0.5, show_default=True,
              help="Warn when certified accuracy at r=0 falls below this fraction of the base model's clean accuracy.")
@click.option("--noise-batch-size", type=integer(0), default=0, help="Noisy inputs per forward pass (0 = --batch-size on a CPU, max(--batch-size, 1000) on a GPU).")
@run_options
@click.option("--no-mlflow", is_flag=True, help="Do not record the run in MLflow.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a SQLite store in OUT).")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@user_errors
def certify(**kw: Any) -> None:
    """Certify L2 robustness by randomized smoothing (Cohen et al. 2019).

    Prints certified accuracy at several radii per sigma, with the smoothed classifier's clean
    accuracy (PREDICT) and, unless --no-attack, the robustness interval (certified lower bound vs
    SmoothAdv upper bound); writes OUT/scorecard.json.

    \b
    Examples:
      robustlab certify --model zoo:digits-cnn --sigma 0.25 --n 10000
      robustlab certify --model zoo:digits-cnn --sigma 0.25 --sampling adaptive --no-attack
      robustlab certify --model zoo:cifar10-resnet18 --sigma 0.25 --sigma 0.5 --num-points 100 --device cuda
    """
    from ..pipelines.certify import CertifyOptions, certification_suite, certify as run_certify
    from ..pipelines.evaluate import RunConfig
    from ..pipelines.postrun import PostRunOptions
    from .evaluate import finish

    params = CertifyOptions(
        sigmas=tuple(kw["sigmas"]), n=kw["n"], n0=kw["n0"], alpha=kw["alpha"], sampling=kw["sampling"], num_points=kw["num_points"],
        radii=float_list_option(kw["radii"], "--radii") or (), predict_n=kw["predict_n"], attack=bool(kw["attack"]),
        interval_radii=float_list_option(kw["interval_radii"], "--interval-radii") or (), attack_steps=kw["attack_steps"], attack_samples=kw["attack_samples"],
        base_attack=bool(kw["base_attack"]), noise_batch_size=kw["noise_batch_size"], settle_wrong=bool(kw["settle_wrong"]),
        attack_n=kw["attack_n"], collapse_ratio=kw["collapse_ratio"],
    )
    suite = certification_suite(params)  # validated before loading
    out = Path(kw["out_dir"]) if kw.get("out_dir") else default_out_dir(kw["model_spec"], "certify")
    cfg = RunConfig(
        model_spec=kw["model_spec"], load=load_options_from(kw), suite=suite, data_spec=kw.get("data_spec"), dataset=kw.get("dataset_name"), data_root=kw.get("data_root"),
        download=bool(kw.get("download")), out_dir=out, limit=kw.get("limit"), **run_settings(kw),
    )
    post = PostRunOptions(mlflow=not kw.get("no_mlflow"), mlflow_uri=kw.get("mlflow_uri"), report=not kw.get("no_report"))
    with output_lock(out, cfg.command):
        card = run_certify(cfg)
        code = finish(card, out, post, quiet=True, as_json=bool(kw.get("as_json")))
    if not kw.get("quiet"):
        click.echo(certify_table(card), err=bool(kw.get("as_json")))
        click.echo(f"scorecard: {out / 'scorecard.json'}", err=bool(kw.get("as_json")))
        if (out / "report.html").is_file():
            click.echo(f"report:    {out / 'report.html'}", err=bool(kw.get("as_json")))
    sys.exit(code)


def certify_table(card: Any) -> str:
    """Plain-text tables of a scorecard's certify results: certified accuracy per sigma and radius,
    then ACR, abstention, PREDICT accuracy and the robustness interval."""
    lines: list[str] = []
    for c in card.checks:
        if c.check != "certify":
            continue
        if c.status.value != "ok":
            lines.append(f"{c.id}: {c.status.value}: {c.reason}")
            continue
        m = c.metrics
        pre = ("certify" if c.id == "certify" else f"certify/{c.id}").split("/")
        cert: dict[float, dict[float, float]] = {}
        inter: dict[tuple[float, float], dict[str, float]] = {}
        per_sigma: dict[float, dict[str, float]] = {}
        for k, v in m.items():
            pk = parse(k)
            if len(pk.segments) < len(pre) + 2 or list(pk.segments[: len(pre)]) != pre or pk.sigma is None or pk.segments[len(pre)] != sigma_segment(pk.sigma):
                continue
            rest = pk.segments[len(pre) + 1 :]
            if len(rest) == 1 and pk.radius is not None and pk.measure == "certified_accuracy":
                cert.setdefault(pk.sigma, {})[pk.radius] = v
            elif len(rest) == 2 and pk.radius is not None and parse(rest[0]).measure == "interval":
                inter.setdefault((pk.sigma, pk.radius), {})[rest[1]] = v
            elif len(rest) == 1:
                per_sigma.setdefault(pk.sigma, {})[rest[0]] = v
        sigmas = sorted(set(cert) | set(per_sigma))
        radii = sorted({r for rs in cert.values() for r in rs})
        nan = float("nan")
        head = ["sigma"] + [f"r={_g(r)}" for r in radii] + ["ACR", "abstain", "PREDICT acc"]
        rows = []
        for s in sigmas:
            ps = per_sigma.get(s, {})
            rows.append([_g(s)] + [f"{cert.get(s, {}).get(r, nan):.3f}" for r in radii]
                        + [f"{ps.get('average_certified_radius', nan):.3f}", f"{ps.get('abstention_rate', nan):.3f}", f"{ps.get('smoothed_accuracy', nan):.3f}"])
        base_key = child("/".join(pre), "base_accuracy")
        n = c.counts.get(base_key, 0)
        lines.append(f"certified accuracy (fraction of {n} points certified correct with radius >= r), base accuracy {m.get(base_key, nan):.3f}")
        lines += _table(head, rows)
        irows = [[_g(s), _g(r), f"{d.get('lower', nan):.3f}", f"{d.get('upper', nan):.3f}", f"{d.get('gap', nan):.3f}"]
                 for (s, r), d in sorted(inter.items()) if "lower" in d]
        if irows:
            lines.append("robustness interval of the smoothed classifier: certified accuracy (lower) vs robust accuracy under attack (upper)")
            lines += _table(["sigma", "radius", "lower", "upper", "gap"], irows)
        lines += [f"note: {t}" for t in c.notes]
    return "\n".join(lines)


def _g(v: float) -> str:
    """A sigma or radius as its key writes it (``.4g``)."""
    return f"{v:.4g}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    f = "  ".join(f"{{:>{x}}}" for x in w)
    return [f.format(*head), f.format(*("-" * x for x in w))] + [f.format(*r) for r in rows]
