"""Hostile inputs that must fail the user-error way (one ``error:`` line on stderr, exit 2, nothing
computed lost) or work, rather than change results silently or crash (exit 3/4)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import DataError, ResumeError, SuiteError

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")
FAST = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report"]


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, r.stderr
    return line


@pytest.fixture
def no_model_load(monkeypatch):
    """A refusal must come before the model loads: loading it fails the test."""
    import robustlab.pipelines.evaluate

    def boom(*a, **kw):
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr(robustlab.pipelines.evaluate, "load_model", boom)


def _suite(tmp_path: Path, body: str) -> str:
    p = tmp_path / "suite.yaml"
    p.write_text("name: hostile\nchecks:\n" + body)
    return str(p)


# -- 1. --fit-data / fit_data that cannot be loaded ----------------------------------------------------
def test_missing_fit_data_is_refused_before_the_model_loads(tmp_path, no_model_load):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--limit", "16", "--fit-data", f"npz:{tmp_path / 'none.npz'}", "--out", str(out), *FAST])
    line = _one_error_line(r)
    assert "--fit-data" in line and "does not exist" in line
    assert not (out / "scorecard.json").exists() and not (out / "results.sqlite").exists()


def test_missing_suite_fit_data_is_refused_before_the_model_loads(tmp_path, no_model_load):
    suite = _suite(tmp_path, f"  - check: ood\n    params: {{fit_data: 'npz:{tmp_path / 'none.npz'}', detectors: [msp]}}\n")
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--limit", "16", "--suite", suite, "--out", str(tmp_path / "o"), *FAST])
    line = _one_error_line(r)
    assert "fit_data" in line and "does not exist" in line


def test_plan_fit_data_tolerates_only_the_evaluation_data_without_a_train_split():
    from robustlab.ood.data import RunData, plan_fit_data

    def load(spec, split="test", adapt=False):
        raise DataError(f"{spec} has no {split} split")

    run = RunData(load=load, model_bounds=(0.0, 1.0), eval_spec="digits", eval_ids=["a"])
    plan = plan_fit_data(run, fit_data=None, fit_limit=None, val_fraction=0.1, shape=(1, 8, 8), seed=0, min_fit=2)
    assert plan.fit is None and any("no fit data" in n for n in plan.notes)  # the default: noted, not an error
    for kw, rd in (({"fit_data": "npz:x.npz"}, run), ({"fit_data": None}, RunData(load=load, model_bounds=(0.0, 1.0), eval_spec="digits", eval_ids=["a"], fit_spec="npz:x.npz"))):
        with pytest.raises(DataError, match="npz:x.npz has no train split"):
            plan_fit_data(rd, fit_limit=None, val_fraction=0.1, shape=(1, 8, 8), seed=0, min_fit=2, **kw)


# -- 2. a damaged fingerprint in the result store -----------------------------------------------------
def test_damaged_stored_fingerprint_refuses_resume(tmp_path):
    from robustlab.store import ResultStore

    path = tmp_path / "results.sqlite"
    s = ResultStore(path, {"model": "m"})
    s.begin(resume=False)
    s.put("scope", "0:8", {"x": 1})
    s.close()
    for bad in ("{bad json", "[1, 2]", "\udcff"):
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET v=? WHERE k='fingerprint'", (bad.encode("utf-8", "surrogateescape") if "\udcff" in bad else bad,))
        db.commit()
        db.close()
        s = ResultStore(path, {"model": "m"})
        with pytest.raises(ResumeError, match="fingerprint .* is damaged.*without --resume"):
            s.begin(resume=True)
        s.close()


def test_stored_value_that_is_not_json_is_recomputed(tmp_path):
    from robustlab.store import ResultStore, _checksum

    path = tmp_path / "results.sqlite"
    s = ResultStore(path, {"model": "m"})
    s.begin(resume=False)
    s.put("scope", "0:8", {"x": 1})
    k = s._key("scope", "0:8")
    s._db.execute("UPDATE results SET v=?, c=? WHERE k=?", ("{bad", _checksum(s._fp, k, "{bad"), k))  # edited with a matching checksum
    s._db.commit()
    assert s.get("scope", "0:8") is None
    s.close()


def test_damaged_fingerprint_exits_2_on_resume(tmp_path):
    out = tmp_path / "o"
    args = ["evaluate", "--model", "zoo:digits-cnn", "--limit", "16", "--suite", CLEAN, "--out", str(out), *FAST]
    assert CliRunner().invoke(main, args).exit_code == 0
    card = (out / "scorecard.json").read_bytes()
    db = sqlite3.connect(out / "results.sqlite")
    db.execute("UPDATE meta SET v='{bad json' WHERE k='fingerprint'")
    db.commit()
    db.close()
    line = _one_error_line(CliRunner().invoke(main, [*args, "--resume"]))
    assert "cannot resume" in line and "without --resume" in line
    assert (out / "scorecard.json").read_bytes() == card


# -- 3. metric keys of any finite positive value; values that would share a key ------------------------
def test_value_segments_are_legal_and_parse_back():
    from robustlab import metric_keys as mk

    for v in (1e30, 12345.0, 1e4, 16.0, 1e-5, 0.03137, 2.5e-300, 1.7e308):
        for seg, got in ((mk.eps_segment(v), lambda k: mk.parse(k).eps), (mk.sigma_segment(v), lambda k: mk.parse(k).sigma),
                         (mk.at_radius("certified_accuracy", v), lambda k: mk.parse(k).radius)):
            k = mk.key("certify", seg)
            assert mk.is_legal_key(k), k
            assert got(k) == pytest.approx(v, rel=1e-3)
    assert mk.eps_segment(0.03137) == "eps_0.03137" and mk.eps_segment(16) == "eps_16"  # keys of the usual values do not change


def test_certify_with_a_huge_sigma_gives_legal_keys(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "1e30", "--n", "20", "--n0", "10", "--alpha", "0.1", "--num-points", "4",
                                  "--no-attack", "--limit", "8", "--out", str(out), *FAST])
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    check = json.loads((out / "scorecard.json").read_text())["checks"][0]
    assert check["status"] == "ok" and "certify/sigma_1e30/abstention_rate" in check["metrics"]


def test_list_values_that_share_a_metric_key_are_refused(tmp_path):
    from robustlab.suite import build_suite, load_suite

    with pytest.raises(SuiteError, match=r"0\.1 and 0\.10004 .*eps_0\.1"):
        load_suite(_suite(tmp_path, "  - check: fgsm\n    params: {epsilons: [0.1, 0.10004]}\n"))
    with pytest.raises(SuiteError, match=r"epsilons and primary_eps: 0\.2 and 0\.20001"):
        build_suite("s", [("pgd", {"epsilons": [0.1, 0.2], "primary_eps": 0.20001})])
    with pytest.raises(SuiteError, match="minimal_norm.epsilons"):
        build_suite("s", [("minimal_norm", {"epsilons": [0.5, 0.50001]})])
    for field, vals in (("sigmas", [0.25, 0.250001]), ("radii", [0.5, 0.50001]), ("interval_radii", [1, 1.00001])):
        with pytest.raises(SuiteError, match=f"certify.{field}"):
            build_suite("s", [("certify", {field: vals})])
    build_suite("s", [("fgsm", {"epsilons": [0.1, 0.1, 0.1004]})])  # a repeated value or 4 significant digits apart is fine


def test_clashing_sigmas_exit_2_before_the_model_loads(tmp_path, no_model_load):
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "0.25", "--sigma", "0.250001", "--n", "20", "--out", str(tmp_path / "o"), *FAST])
    assert "sigma_0.25" in _one_error_line(r)


# -- 4. corrupt with no corruption -------------------------------------------------------------------------
@pytest.mark.parametrize("names", ["", " , "])
def test_corrupt_with_no_corruption_is_refused(tmp_path, names):
    out = tmp_path / "c"
    r = CliRunner().invoke(main, ["corrupt", "--data", "digits", "--out", str(out), "--corruptions", names, "--limit", "4", "-q"])
    assert "--corruptions" in _one_error_line(r)
    assert not (out / "manifest.json").exists()


# -- 5. a torch zip whose pickle calls os.system -----------------------------------------------------------
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_a_zip_checkpoint_asks_for_trust_code(tmp_path):
    import torch

    from robustlab.errors import TrustError
    from robustlab.models import load_model

    marker = tmp_path / "ran"
    pt = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Payload(str(marker))}, pt)
    with pytest.raises(TrustError, match="--trust-code"):
        load_model(str(pt))
    assert not marker.exists()
    r = CliRunner().invoke(main, ["evaluate", "--model", str(pt), "--suite", CLEAN, "--out", str(tmp_path / "o"), *FAST])
    line = _one_error_line(r)  # the CLI: one line naming --trust-code, and nothing ran
    assert "--trust-code" in line and "pickled" in line and "corrupt" not in line
    assert not marker.exists()


# -- 6. wording: saved-examples index, non-regular files, public keys ---------------------------------------
def test_damaged_adversarial_index_refuses_resume_and_keeps_the_scorecard(tmp_path):
    out = tmp_path / "o"
    suite = _suite(tmp_path, "  - check: fgsm\n    params: {epsilons: [0.1], audit: false}\n")
    args = ["evaluate", "--model", "zoo:digits-cnn", "--limit", "16", "--suite", suite, "--save-adversarial", "--out", str(out), *FAST]
    assert CliRunner().invoke(main, args).exit_code == 0
    card = (out / "scorecard.json").read_bytes()
    (out / "adversarial" / "index.json").write_text("{bad")
    line = _one_error_line(CliRunner().invoke(main, [*args, "--resume"]))
    assert "scorecard" not in line and "index of saved adversarial examples" in line and "--resume" in line
    assert (out / "scorecard.json").read_bytes() == card


def test_sign_a_device_says_it_is_not_a_regular_file(tmp_path):
    from robustlab.signing import generate_key

    key, _pub = generate_key(tmp_path / "k.pem")
    line = _one_error_line(CliRunner().invoke(main, ["sign", "--key", str(key), os.devnull]))
    assert "not a regular file" in line and "does not exist" not in line


def test_verify_with_a_junk_public_key_says_public_key(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("junk\n")
    card = tmp_path / "scorecard.json"
    card.write_text("{}")
    line = _one_error_line(CliRunner().invoke(main, ["verify", "--public-key", str(junk), str(card)]))
    assert "public key" in line and "private" not in line



@pytest.mark.parametrize("params", ["epsilons: [-0.1, 0.2]", "epsilons: [0.0]", "epsilons: []", "primary_eps: -1"])
def test_minimal_norm_budgets_must_be_positive(tmp_path, params, no_model_load):
    """Before: epsilons [-0.1, 0.2] ran and reported robust accuracy 1.0 at eps -0.1 (exit 0)."""
    suite = _suite(tmp_path, "  - check: minimal_norm\n    params: {attack: fmn, norm: linf, steps: 5, " + params + "}\n")
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--limit", "8", "--suite", suite, "--out", str(tmp_path / "o"), *FAST])
    assert "minimal_norm" in _one_error_line(r)


def test_sign_refuses_a_bad_scorecard_before_writing_a_key_pair(tmp_path):
    """Before: `sign --generate-key K BAD` wrote K and K.pub.pem, then refused BAD."""
    bad = tmp_path / "card.json"
    bad.write_text('{"schema_version": 2, "checks": [')  # truncated
    key = tmp_path / "k.pem"
    r = CliRunner().invoke(main, ["sign", "--generate-key", str(key), str(bad)])
    _one_error_line(r)
    assert not list(tmp_path.glob("k*")), list(tmp_path.iterdir())


def test_primary_eps_that_would_share_the_default_budgets_key_is_refused():
    """No epsilons list: the sweep is the data set's budget; a primary_eps within 4 significant digits of it
    (0.03137 against 8/255) would report both under eps_0.03137. Before: both were attacked and merged."""
    from robustlab.attacks.scoring import resolve_epsilons
    from robustlab.attacks.threat import Norm
    from robustlab.models import load_model

    m = load_model("zoo:cifar10-resnet18", device="cpu")
    with pytest.raises(SuiteError, match="same metric key eps_0.03137"):
        resolve_epsilons(m, Norm.LINF, None, 0.03137)
    eps, prim = resolve_epsilons(m, Norm.LINF, None, 8 / 255)
    assert eps == [8 / 255] and prim == 8 / 255
    eps, prim = resolve_epsilons(m, Norm.LINF, None, 0.05)
    assert eps == [8 / 255, 0.05] and prim == 0.05


def test_negated_flag_help_says_it_turns_the_setting_off():
    """Before: `defend --help` described --no-random-start as 'Start the attack at a uniform random point'."""
    r = CliRunner().invoke(main, ["defend", "--help"], terminal_width=400)
    assert r.exit_code == 0
    line = next(ln for ln in r.output.splitlines() if "--no-random-start" in ln)
    assert "turn off" in line, line


@pytest.mark.parametrize("how", ["option", "model"])
def test_a_model_with_one_class_is_refused(tmp_path, how):
    """Before: --num-classes 1 ran the quick suite to exit 0 with accuracy 1.0, robust accuracy 1.0 and AUROC 0.5."""
    if how == "option":
        r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--num-classes", "1", "--out", str(tmp_path / "o"), *FAST])
        assert r.exit_code == 2 and "--num-classes" in r.output + (r.stderr or "")
    else:
        from torch import nn

        from robustlab.errors import ModelLoadError
        from robustlab.models.wrapper import ModelInfo, RobustModel

        with pytest.raises(ModelLoadError, match="at least 2"):
            RobustModel(nn.Linear(4, 1), ModelInfo(spec="t", format="test", num_classes=1))


def test_defend_eps_help_states_its_unit():
    """An explicit --eps is in the model's input units (certify's --sigma is in [0, 1] units): the help says which.
    Before: 'Training budget, e.g. 8/255', wrong by 255x for a 0..255 model."""
    r = CliRunner().invoke(main, ["defend", "--help"], terminal_width=400)
    line = next(ln for ln in r.output.splitlines() if ln.strip().startswith("--eps"))
    assert "input units" in line and "--bounds 0,255" in line, line
