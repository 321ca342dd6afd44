"""The HTML report: content, escaping, no torch import, and a headless-Chromium rendering test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.gates import evaluate_policy, parse_policy
from robustlab.report import render_report, write_report
from robustlab.report.untested import not_tested
from robustlab.scorecard import Verdict
from robustlab.signing import generate_key, sign_scorecard, verify_scorecard

ROBUST = "adversarial/pgd/robust_accuracy"


def test_report_sections_and_numbers():
    card = make_card()
    html = render_report(card)
    for heading in ("Verdict and gates", "Provenance", "Clean accuracy and calibration", "Adversarial robustness",
                    "Common corruptions", "Out-of-distribution detection", "Certified robustness", "Metric definitions",
                    "What was not tested"):
        assert heading in html, heading
    assert f"{card.metrics()[ROBUST]:.4f}" in html
    iv = card.intervals()[ROBUST]
    assert f"[{iv.low:.4f}, {iv.high:.4f}] 95% wilson" in html
    assert card.model["sha256"] in html and card.run["command"] in html
    assert html.count('<svg class="plot"') == 5  # reliability, robust vs eps, heat map, ROC, certified vs radius
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "not-gated" in html and "unsigned" in html
    # metrics sharing their final segments are pivoted: one row per OOD set, one column per metric
    assert html.count('<table class="pivot">') == 1 and "ood/energy/svhn/…" in html and "ood/energy/cifar100/…" in html
    assert "<code>ood/energy/svhn/auroc</code>" not in html.split('id="definitions"')[0]


def test_report_escapes_scorecard_strings():
    card = make_card()
    card.model["spec"] = "<script>alert('x')</script>"
    card.checks[1].audit[0] = type(card.checks[1].audit[0])("x<y", Verdict.SUSPECT, "<img src=x onerror=alert(1)>", {"k": "<b>"})
    card.checks[1].series["robust_accuracy_vs_eps"].y["<i>evil</i>"] = [0.1, 0.1, 0.1, 0.1]
    html = render_report(card)
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<img src=x" not in html and "<i>evil</i>" not in html and "<b>" not in html


def test_gate_and_signature_state_shown(tmp_path):
    card = make_card()
    gate = evaluate_policy(card, parse_policy({"rules": [{"name": "robust floor 0.99", "metric": ROBUST, "op": ">=", "threshold": 0.99}]}))
    html = render_report(card, gate=gate)
    assert "robust floor 0.99" in html and 'class="badge b-fail"' in html and "exit 1" in html
    path = card.write(tmp_path / "scorecard.json")
    priv, pub = generate_key(tmp_path / "k.pem")
    sign_scorecard(path, priv)
    html = render_report(card, verification=verify_scorecard(path, public_key=pub))
    assert "valid-trusted" in html
    d = json.loads(path.read_text())
    d["checks"][0]["metrics"]["clean/accuracy"] = 1.0
    path.write_text(json.dumps(d))
    html = render_report(card, verification=verify_scorecard(path, public_key=pub))
    assert 'b-invalid">invalid' in html and "modified after signing" in html


def test_not_tested_reflects_the_run():
    card = make_card()
    items = " ".join(not_tested(card))
    assert "No L2 attack" in items  # only an L-inf attack ran
    assert "AutoAttack" in items and "Square" in items
    assert "fab" in items and "skipped" in items
    assert "held-out" in items.lower()
    only_clean = make_card()
    only_clean.checks = only_clean.checks[:1]
    items = " ".join(not_tested(only_clean))
    assert "No adversarial attack was run" in items and "No common corruption" in items
    assert "Out-of-distribution detection was not tested" in items and "No certified" in items
    assert "No L2 attack" not in items


def test_report_subprocess_imports_no_torch(tmp_path):
    path = make_card().write(tmp_path / "scorecard.json")
    out = tmp_path / "r.html"
    code = (
        "import sys\n"
        "from robustlab.cli import main\n"
        f"main(['report', {str(path)!r}, '-o', {str(out)!r}, '--policy', {str(_policy(tmp_path))!r}], standalone_mode=False)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert out.is_file() and "Gate rules" in out.read_text()


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n")
    return p


def test_report_cli_default_output_and_errors(tmp_path):
    path = make_card().write(tmp_path / "scorecard.json")
    res = CliRunner().invoke(main, ["report", str(path)])
    assert res.exit_code == 0 and (tmp_path / "report.html").is_file()
    (tmp_path / "broken.json").write_text("{not json")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "broken.json")])
    assert res.exit_code == 2 and "not a valid robustlab scorecard" in res.output


# -- headless Chromium ----------------------------------------------------------------------------
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _run_chromium(exe: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--hide-scrollbars", "--force-device-scale-factor=1", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


_PROBE = """<script>
(function () {
  var out = [];
  document.querySelectorAll('svg.plot').forEach(function (s) {
    var r = s.getBoundingClientRect(), cs = getComputedStyle(s);
    out.push({x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
              visible: cs.display !== 'none' && cs.visibility !== 'hidden' && r.width > 50 && r.height > 50,
              marks: s.querySelectorAll('polyline, rect[fill], circle').length});
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({plots: out, height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
})();
</script>"""


def _probe(exe: str, html: str, tmp: Path, name: str, *, hide: bool = False) -> dict:
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)  # allow the probe script
    if hide:
        page = page.replace("</style>", "svg.plot { display: none; }</style>")
    page = page.replace("</body>", _PROBE + "</body>")
    f = tmp / f"{name}.html"
    f.write_text(page)
    res = _run_chromium(exe, f.as_uri(), tmp / f"profile-{name}", "--window-size=1200,900", "--dump-dom")
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_report_renders_in_headless_chromium(tmp_path):
    exe = _chromium()
    from PIL import Image

    card = make_card()
    gate = evaluate_policy(card, parse_policy({"rules": [
        {"name": "clean accuracy >= 0.8 (lower CI)", "metric": "clean/accuracy", "op": ">=", "threshold": 0.8, "on": "lower"},
        {"name": "robust accuracy >= 0.5", "metric": ROBUST, "op": ">=", "threshold": 0.5},
    ]}))
    report = write_report(card, tmp_path / "report.html", gate=gate)
    html = report.read_text()

    # 1. the real page (with its CSP): no console messages at all (errors, CSP violations, blocked loads)
    res = _run_chromium(exe, report.as_uri(), tmp_path / "profile-real", "--window-size=1200,900", "--dump-dom")
    assert res.returncode == 0 and "Verdict and gates" in res.stdout
    assert _console(res.stderr) == []
    # the console check can fail: a page that logs an error and loads a remote image under the CSP
    bad = tmp_path / "bad.html"
    bad.write_text(html.replace("</footer>", "</footer><img src='http://192.0.2.1/x.png'>", 1))
    assert _console(_run_chromium(exe, bad.as_uri(), tmp_path / "profile-bad", "--dump-dom").stderr)

    # 2. every plot is laid out and visible, with drawn marks; hiding them is detected
    probe = _probe(exe, html, tmp_path, "probe")
    assert len(probe["plots"]) == 5 and all(p["visible"] and p["marks"] > 3 for p in probe["plots"]), probe
    hidden = _probe(exe, html, tmp_path, "hidden", hide=True)
    assert not any(p["visible"] for p in hidden["plots"])

    # 3. a full-page screenshot; every plot region contains drawn (non-white) pixels
    height = int(probe["height"]) + 20
    shot = tmp_path / "report.png"
    res = _run_chromium(exe, report.as_uri(), tmp_path / "profile-shot", f"--window-size=1200,{height}", f"--screenshot={shot}")
    assert shot.is_file(), res.stderr[-2000:]
    img = Image.open(shot).convert("L")
    assert img.size[1] >= height - 40
    for p in probe["plots"]:
        crop = img.crop((int(p["x"]), int(p["y"]), int(p["x"] + p["w"]), int(p["y"] + p["h"])))
        hist = crop.histogram()
        dark = sum(hist[:200]) / max(1, sum(hist))
        assert dark > 0.01, f"plot at {p} looks blank"
    target = os.environ.get("ROBUSTLAB_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / "report.png")
        shutil.copy(report, Path(target) / "report.html")


def test_help_of_report_commands_imports_no_heavy_modules():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from robustlab.cli import main\n"
        "for c in (['--help'], ['report', '--help'], ['gate', '--help'], ['compare', '--help'], ['sign', '--help'], ['verify', '--help']):\n"
        "    r = CliRunner().invoke(main, c)\n"
        "    assert r.exit_code == 0, (c, r.output)\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'jinja2', 'cryptography') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
