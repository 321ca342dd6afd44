"""Validity defects found by a second probe (each test fails on the code before its fix):
a McNemar rule with no paired samples, the OOD cache reused across models that share a weights file,
minimal-norm attacks on models whose input range is not [0, 1], and Gaussian-noise training units."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.gates import evaluate_policy, parse_policy
from robustlab.models.wrapper import ModelInfo, RobustModel

sys.path.insert(0, str(Path(__file__).parent))
from test_report_cards import make_card  # noqa: E402

ROBUST_FLAGS = {"per_sample": "robust@eps=0.03137", "check": "pgd"}


def test_mcnemar_with_no_paired_samples_is_inconclusive_not_a_pass():
    """Before: candidate and baseline on different data (no shared ids) passed: '0 lost, 0 gained of 0 paired, p=1'."""
    base = make_card(n=100)
    cand = make_card(n=100)
    cand.data["ids"] = [f"other/{i}" for i in range(100)]
    pol = parse_policy({"rules": [{"name": "no regression", "metric": "clean/accuracy", "mcnemar": ROBUST_FLAGS}]})
    rep = evaluate_policy(cand, pol, baseline=base)
    assert rep.exit_code == 3, rep.results[0].message
    assert "data.ids: 100 in the baseline vs 100, not the same list" in rep.results[0].message  # the ids differ: other images
    for c in (base, cand):  # the same content under other ids: McNemar itself finds nothing to pair
        c.data["content_sha256"] = "11" * 32
    rep = evaluate_policy(cand, pol, baseline=base)
    assert rep.exit_code == 3, rep.results[0].message
    assert "0 of 100 samples pair" in rep.results[0].message
    assert evaluate_policy(base, pol, baseline=base).exit_code == 0  # same data: decided as before


def _wrapped(net, **info):
    kw = dict(spec="w.safetensors", format="safetensors", num_classes=3, bounds=(0.0, 1.0), sha256="ab" * 32, input_shape=(1, 4, 4))
    kw.update(info)
    return RobustModel(net, ModelInfo(**kw))


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _LinHalf(_Lin):
    def forward(self, x):
        return self.fc(x.flatten(1) / 2)


def test_ood_cache_fingerprint_covers_the_model_contract_and_code():
    """Before: the fingerprint was the weights file's sha256 alone, so --mean/--std or another factory forward
    over the same state dict reused the first model's fitted statistics (Mahalanobis far AUROC 0.29 against 0.99)."""
    from robustlab.ood.cache import model_fingerprint

    net = _Lin()
    a = model_fingerprint(_wrapped(net))
    assert model_fingerprint(_wrapped(net)) == a  # the same model still hits its cache
    assert model_fingerprint(_wrapped(net, mean=(0.5,), std=(0.1,))) != a
    assert model_fingerprint(_wrapped(net, spec="factory:m:g2")) != a
    half = _LinHalf()
    half.load_state_dict(net.state_dict())
    assert model_fingerprint(_wrapped(half)) != a  # same weights, another forward


class _Scaled(nn.Module):
    """f(x / k): the same function as ``net`` on inputs scaled by k."""

    def __init__(self, net, k):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x):
        return self.net(x / self.k)


@pytest.mark.parametrize("attack,norm", [("fmn", "linf"), ("fmn", "l2"), ("cw_l2", "l2")])
def test_minimal_norm_attacks_do_not_depend_on_the_input_scale(attack, norm):
    """The zoo digits CNN in [0, 1] and the same function on 0..255 inputs: the minimal norms (in each
    model's units) agree up to the factor 255. Before: FMN Linf found 0.156 robust at eps 0.1 on the first
    and 0.938 at eps 25.5 on the second (foolbox's step sizes are absolute, tuned for [0, 1])."""
    from robustlab.attacks.base import ATTACKS
    from robustlab.data import load_dataset
    from robustlab.models import load_model

    torch.manual_seed(0)
    m01 = load_model("zoo:digits-cnn", device="cpu")
    info255 = m01.info.with_overrides(bounds=(0.0, 255.0))
    m255 = RobustModel(_Scaled(m01.net, 255.0), info255).eval()
    d = load_dataset("digits", split="test").limit(24)
    x, y = d.images(slice(0, 24)), d.y[:24]
    kw = {"norm": norm, "steps": 20}
    if attack == "cw_l2":
        kw["binary_search_steps"] = 3
    cls = ATTACKS.get(attack)
    atk = cls(**{k: v for k, v in kw.items() if k in cls.hyperparameters()})
    r01 = atk(m01, x, y, seeds=list(range(24)))
    r255 = atk(m255, x * 255.0, y, seeds=list(range(24)))
    n01, n255 = r01.min_norm, r255.min_norm / 255.0
    found01, found255 = torch.isfinite(n01), torch.isfinite(n255)
    assert found01.float().mean() > 0.5
    assert torch.equal(found01, found255)
    assert torch.allclose(n01[found01], n255[found255], rtol=1e-3, atol=1e-4)


class _Recorder(nn.Module):
    """Logits from a fixed head; remembers the inputs it was given."""

    def __init__(self, bounds):
        super().__init__()
        self.fc = nn.Linear(16, 3)
        self.bounds = bounds
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (0.0, 255.0)])
def test_gaussian_training_sigma_is_in_units_of_the_input_range_like_certify(bounds):
    """certify's sigma 0.25 on a 0..255 model adds noise of std 0.25 * 255; noise training at sigma 0.25
    (and its validation) must add the same. Before: std 0.25 on a 0..255 model (negligible noise:
    validation 'noise accuracy' 0.98 against 0.78 for the same function on [0, 1])."""
    from robustlab.data.base import Dataset
    from robustlab.defenses.gaussian import GaussianNoiseTraining, GaussianParams
    from robustlab.defenses.validation import validate

    span = bounds[1] - bounds[0]
    method = GaussianNoiseTraining(GaussianParams(sigma=0.25))
    m = _Recorder(bounds)
    x = torch.zeros(64, 1, 4, 4)
    method.loss(m, x, torch.zeros(64, dtype=torch.long), seeds=list(range(64)), bounds=bounds)
    assert float(m.seen[-1].std()) == pytest.approx(0.25 * span, rel=0.05)
    m.seen.clear()
    data = Dataset(spec="t", split="val", ids=[f"t/{i}" for i in range(64)], y=torch.zeros(64, dtype=torch.long), classes=["a", "b", "c"], x=x)
    validate(m, method, data, seed=0, batch_size=64)
    noisy = [t for t in m.seen if float(t.abs().max()) > 0]
    assert noisy and float(noisy[0].std()) == pytest.approx(0.25 * span, rel=0.05)
