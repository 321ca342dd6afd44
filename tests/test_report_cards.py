"""Hand-built scorecards shared by the report, gate, tracking and signing tests (plus sanity tests).

Import with ``from test_report_cards import make_card`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math

import numpy as np

from robustlab.stats import wilson_interval
from robustlab.scorecard import AuditItem, CheckResult, Scorecard, Series, Status, Verdict

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)


def make_card(*, n: int = 200, clean_acc: float = 0.9, robust_acc: float = 0.45, seed: int = 0,
              audit_verdict: Verdict = Verdict.VALID, robust_flags: list[bool] | None = None,
              sha256: str = "ab" * 32) -> Scorecard:
    """A plausible scorecard with all five families, per-sample flags aligned with ``data.ids``."""
    rng = np.random.default_rng(seed)
    ids = [f"test/{i:05d}" for i in range(n)]
    correct = rng.random(n) < clean_acc
    if robust_flags is None:
        robust = correct & (rng.random(n) < robust_acc / clean_acc)
    else:
        robust = np.asarray(robust_flags, dtype=bool)
    k_c, k_r = int(correct.sum()), int(robust.sum())

    clean = CheckResult(id="clean", check="clean")
    clean.add_metric("clean/accuracy", k_c / n, interval=wilson_interval(k_c, n), n=n)
    clean.add_metric("clean/ece", 0.031, n=n)
    bins = [i / 10 + 0.05 for i in range(10)]
    clean.series["reliability"] = Series(x=bins, y={"accuracy": [min(1.0, b * 0.95) for b in bins], "confidence": bins}, x_label="confidence", y_label="accuracy", kind="bar")
    clean.per_sample["correct"] = [bool(v) for v in correct]
    clean.definitions["clean/accuracy"] = "Top-1 accuracy on all n test points."
    clean.definitions["clean/ece"] = "Expected calibration error, 15 equal-width bins (Guo et al. 2017)."

    adv = CheckResult(id="pgd", check="pgd", params={"steps": 40, "restarts": 1, "norm": "linf", "epsilons": [1 / 255, 2 / 255, 4 / 255, 8 / 255]})
    eps = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    curve = []
    for j, e in enumerate(eps):
        k = int(round(k_r * (1.0 + 0.4 * (len(eps) - 1 - j))))
        k = min(k, k_c) if j < len(eps) - 1 else k_r
        adv.add_metric(f"adversarial/pgd/eps={e:.4g}/robust_accuracy", k / n, interval=wilson_interval(k, n), n=n)
        curve.append(k / n)
    adv.add_metric("adversarial/pgd/robust_accuracy", k_r / n, interval=wilson_interval(k_r, n), n=n)
    adv.add_metric("adversarial/pgd/primary_eps", 8 / 255)
    adv.series["robust_accuracy_vs_eps"] = Series(x=[round(e, 4) for e in eps], y={"pgd": curve}, x_label="epsilon (linf)", y_label="robust accuracy")
    adv.per_sample["robust@eps=0.03137"] = [bool(v) for v in robust]
    adv.per_sample["clean_correct"] = [bool(v) for v in correct]
    adv.definitions["adversarial/pgd/robust_accuracy"] = "Fraction of all n points correct and with no adversarial example found in the eps ball (clean errors count as non-robust)."
    adv.audit.append(AuditItem("robust_le_clean", Verdict.VALID, "robust accuracy <= clean accuracy at every epsilon", {"clean": k_c / n, "max_robust": max(curve)}))
    adv.audit.append(AuditItem("gradient_masking", audit_verdict, "black-box attack did not beat white-box" if audit_verdict is Verdict.VALID else "Square found adversarial examples PGD missed on 7 points", {"points": 7, "ids": ids[:7]}))

    cor = CheckResult(id="corruptions", check="corruptions")
    grid = {c: [round(0.1 + 0.1 * s + 0.02 * i, 4) for s in range(5)] for i, c in enumerate(CORRUPTIONS)}
    cor.series["error_heatmap"] = Series(x=[1, 2, 3, 4, 5], y=grid, rows=list(CORRUPTIONS), x_label="severity", y_label="top-1 error", kind="grid")
    cor.add_metric("corruption/mce", 0.5, n=n)
    cor.definitions["corruption/mce"] = "Unnormalised mean corruption error (fraction): no baseline named."

    ood = CheckResult(id="ood", check="ood")
    fpr = [0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    ood.series["roc_cifar100"] = Series(x=fpr, y={"energy": [0.0, 0.4, 0.55, 0.7, 0.85, 0.93, 0.98, 1.0], "msp": [0.0, 0.3, 0.45, 0.62, 0.8, 0.9, 0.97, 1.0]}, x_label="false positive rate", y_label="true positive rate", kind="roc")
    ood.add_metric("ood/energy/cifar100/auroc", 0.81, n=n)
    ood.add_metric("ood/energy/cifar100/fpr@95tpr", 0.62, n=n)
    ood.add_metric("ood/energy/svhn/auroc", 0.74, n=n)
    ood.add_metric("ood/energy/svhn/fpr@95tpr", 0.71, n=n)
    ood.add_metric("ood/energy/threshold", -7.25)

    cert = CheckResult(id="certify", check="certify", params={"sigma": 0.25, "n0": 100, "n": 1000, "alpha": 0.001})
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    ca = [0.6, 0.45, 0.3, 0.15, 0.05]
    cert.series["certified_accuracy_vs_radius"] = Series(x=radii, y={"sigma=0.25": ca}, x_label="L2 radius", y_label="certified accuracy")
    for r, a in zip(radii, ca):
        cert.add_metric(f"certify/sigma=0.25/certified_accuracy@r={r:g}", a, interval=wilson_interval(int(a * n), n), n=n)

    skipped = CheckResult(id="fab", check="fab_t", status=Status.SKIPPED, reason="FAB-T needs at least 3 classes in the data")

    return Scorecard(
        tool={"name": "robustlab", "version": "0.1.0"},
        model={"spec": "zoo:test-net", "format": "test", "sha256": sha256, "num_classes": 10, "input_shape": [3, 32, 32], "bounds": [0.0, 1.0]},
        data={"spec": "samples:cifar10", "split": "test", "n": n, "ids": ids, "sha256": "cd" * 32},
        suite={"name": "standard", "sha256": "ef" * 32, "checks": ["clean", "pgd", "corruptions", "ood", "certify", "fab"]},
        environment={"python": "3.11", "torch": "2.14.1", "device": "cpu", "platform": "linux"},
        run={"seed": seed, "batch_size": 64, "command": "robustlab evaluate zoo:test-net --data samples:cifar10 --suite standard", "started": "2026-01-01T00:00:00Z",
             "finished": "2026-01-01T00:00:13Z", "complete": True},
        checks=[clean, adv, cor, ood, cert, skipped],
        timings={"total": 12.5},
    )


def test_card_round_trips_through_json(tmp_path):
    card = make_card()
    p = card.write(tmp_path / "scorecard.json")
    back = Scorecard.read(p)
    assert back.metrics() == card.in_key_schema().metrics()  # make_card writes 1.x keys: read back under their 2.0 keys
    assert back.checks[1].per_sample["robust/eps_0.03137"] == card.checks[1].per_sample["robust@eps=0.03137"]
    assert len(back.data["ids"]) == len(back.checks[0].per_sample["correct"])


def test_card_numbers_are_consistent():
    card = make_card(n=300, clean_acc=0.8, robust_acc=0.3, seed=3)
    m = card.metrics()
    robust = card.checks[1].per_sample["robust@eps=0.03137"]
    correct = card.checks[0].per_sample["correct"]
    assert all(c for r, c in zip(robust, correct) if r)  # robust implies correct
    assert math.isclose(m["adversarial/pgd/robust_accuracy"], sum(robust) / 300)
    assert math.isclose(m["adversarial/pgd/eps=0.03137/robust_accuracy"], sum(robust) / 300)
    assert m["clean/accuracy"] >= m["adversarial/pgd/robust_accuracy"]
