"""Adversarial examples on disk (``evaluate --save-adversarial``, issue 21) and the uncertainty check
reading them (issue 19): the saved values are exactly what the checks evaluated and counted,
shards are atomic, indexed and resumable, and the default run is unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.adversarial_examples import FIELDS, WorstCase, eps_dir, load_index, read_shard, record_epsilon, root_of, shard_path, tiling, write_shard
from robustlab.errors import RobustlabError, SuiteError

SUITE = """\
name: advdisk
checks:
  - check: clean
  - check: uncertainty
    params: {corruptions: [contrast], severities: [5], n_boot: 10, ood: [], shift: [], adv_limit: 16, adv_steps: 2}
  - check: pgd
    id: pgd_linf
    params: {epsilons: [0.05, 0.1, 0.2], steps: 4, audit: false}
  - check: autoattack
    params: {epsilons: [0.1], n_iter: 3, square_queries: 10, audit: false}
  - check: fgsm
    params: {epsilons: [0.1], audit: false}
"""
N, BS = 40, 16


def _evaluate(out: Path, suite: Path, *extra: str) -> dict:
    from robustlab.cli import main

    try:
        main(["evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", str(N), "--batch-size", str(BS), "--out", str(out),
              "--no-mlflow", "--no-report", "--quiet", "--device", "cpu", *extra], standalone_mode=False)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    return json.loads((out / "scorecard.json").read_text())


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("advdisk")
    suite = d / "suite.yaml"
    suite.write_text(SUITE)
    return d / "run", suite, _evaluate(d / "run", suite, "--save-adversarial")


def _check(card: dict, cid: str) -> dict:
    return next(c for c in card["checks"] if c["id"] == cid)


def test_saved_examples_are_what_the_checks_evaluated(saved_run: tuple[Path, Path, dict]) -> None:
    """Every shard: the samples of its batch, in order, with their labels; x_adv in the ball and the
    bounds; re-predicting x_adv gives the recorded prediction; success = a misclassified example of a
    clean-correct point, and the per-epsilon success flags are the check's own (before the merge)."""
    from robustlab.data import load_dataset
    from robustlab.models import load_model

    out, _suite, card = saved_run
    model = load_model("zoo:digits-cnn")
    data = load_dataset("digits", split="test").limit(N)
    index = load_index(root_of(out))
    assert set(index["checks"]) == {"pgd_linf", "autoattack", "fgsm"}
    assert card["run"]["save_adversarial"] is True
    for cid, entry in index["checks"].items():
        for seg, e in entry["by_eps"].items():
            assert [(r["start"], r["stop"]) for r in e["shards"]] == [(s, min(s + BS, N)) for s in range(0, N, BS)]
            for r in e["shards"]:
                a = read_shard(root_of(out) / r["file"], sha256=r["sha256"])
                assert set(a) == set(FIELDS) and a["x_adv"].dtype == np.float32
                s, t = r["start"], r["stop"]
                assert list(a["ids"]) == data.ids[s:t] and a["y"].tolist() == data.y[s:t].tolist()
                x = data.images(slice(s, t))
                xa = torch.from_numpy(a["x_adv"])
                with torch.no_grad():
                    pred = model(xa).argmax(1).numpy()
                    clean = model(x).argmax(1).numpy()
                assert (pred == a["pred"]).all(), (cid, seg)
                assert (a["correct"] == (clean == a["y"])).all()
                assert ((xa - x).abs().flatten(1).amax(1) <= e["eps"] * (1 + 1e-5) + 1e-7).all() and xa.min() >= 0 and xa.max() <= 1
                assert (a["success"] == (a["correct"] & (a["pred"] != a["y"]))).all()
                assert np.allclose(a["norm"], (xa - x).abs().flatten(1).amax(1).numpy(), atol=1e-6)
                assert torch.equal(xa[~torch.from_numpy(a["correct"])], x[~torch.from_numpy(a["correct"])])  # clean errors unchanged


def test_worst_case_reader_gives_the_counted_examples(saved_run: tuple[Path, Path, dict]) -> None:
    """Read back through :class:`WorstCase`, a point is broken at eps exactly when the check's
    merged per-sample flags say it is not robust (clean errors aside), and the returned example is
    misclassified; the uncertainty check's accuracy under those examples is the check's robust
    accuracy."""
    out, _suite, card = saved_run
    unc = _check(card, "uncertainty")["metrics"]
    for cid in ("pgd_linf", "autoattack", "fgsm"):
        chk = _check(card, cid)
        correct = np.asarray(chk["per_sample"]["clean_correct"], dtype=bool)
        for e in load_index(root_of(out))["checks"][cid]["epsilons"]:
            b = WorstCase(root_of(out), cid, e).read(list(range(N)))
            robust = np.asarray(chk["per_sample"][f"robust/eps_{e:.4g}"], dtype=bool)
            assert (b.success == (correct & ~robust)).all(), (cid, e)
            assert (b.pred[b.success] != b.y[b.success]).all() and (b.eps_used <= e).all()
            acc = unc[f"uncertainty/model/adv/{cid}/eps_{e:.4g}/accuracy"]
            assert acc == pytest.approx(chk["metrics"][f"adversarial/{cid}/eps_{e:.4g}/robust_accuracy"]), (cid, e)
    keys = [k for k in unc if "/adversarial/pgd/" in k]
    assert not keys, "the own PGD ran although the checks' examples were there"
    assert "uncertainty/conformal/aps/0.9/adv/pgd_linf/eps_0.1/coverage" in unc
    assert "conformal_coverage_vs_eps_pgd_linf" in _check(card, "uncertainty")["series"]
    assert "uncertainty/adversarial_source" in _check(card, "uncertainty")["definitions"]
    # the suite lists uncertainty before the adversarial checks: it ran after them
    assert [c["id"] for c in card["checks"]] == ["clean", "pgd_linf", "autoattack", "fgsm", "uncertainty"]


def test_merge_uses_the_largest_breaking_epsilon(tmp_path: Path) -> None:
    """Hand-made shards, sweep 0.1 / 0.2 / 0.3: point 0 broken at 0.1 only, point 1 at 0.2 and 0.3,
    point 2 never, point 3 a clean error. At 0.3 the reader returns 0.1's, 0.3's, 0.3's and 0.3's example."""
    root = tmp_path / "adversarial"
    succ = {0.1: [True, False, False, False], 0.2: [False, True, False, False], 0.3: [False, True, False, False]}
    for e, s in succ.items():
        x = np.full((4, 1, 2, 2), e, dtype=np.float32)
        write_shard(shard_path(eps_dir(root, "c", e), 0, 4), ids=["a", "b", "c", "d"], y=np.zeros(4), x_adv=x, pred=np.asarray(s, dtype=int),
                    correct=[True, True, True, False], success=s, norm=np.zeros(4))
        record_epsilon(root, check_id="c", check="pgd", norm="linf", eps=e, epsilons=list(succ), n=4)
    b = WorstCase(root, "c", 0.3).read([0, 1, 2, 3], ["a", "b", "c", "d"])
    assert b.eps_used.tolist() == [0.1, 0.3, 0.3, 0.3] and b.success.tolist() == [True, True, False, False]
    assert b.x_adv[:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.3, 0.3, 0.3])
    assert WorstCase(root, "c", 0.2).read([1]).eps_used.tolist() == [0.2]
    with pytest.raises(RobustlabError, match="other samples"):
        WorstCase(root, "c", 0.1).read([0], ["z"])


def test_half_written_and_damaged_shards_are_never_read(tmp_path: Path) -> None:
    folder = eps_dir(tmp_path, "c", 0.1)
    kw = dict(y=np.zeros(2), x_adv=np.zeros((2, 1, 2, 2), dtype=np.float32), pred=np.zeros(2), correct=[True, True], success=[False, False], norm=np.zeros(2))
    write_shard(shard_path(folder, 0, 2), ids=["a", "b"], **kw)
    (folder / ".000000002-000000004.npz.x1.tmp").write_bytes(b"PK half a shard")  # a writer killed mid-write leaves only its temp file
    assert tiling(folder, 4) == ([(0, 2)], [(2, 4)])
    entry = record_epsilon(tmp_path, check_id="c", check="pgd", norm="linf", eps=0.1, epsilons=[0.1], n=2)
    path = tmp_path / entry["shards"][0]["file"]
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RobustlabError, match="sha256"):
        WorstCase(tmp_path, "c", 0.1).read([0])
    path.write_bytes(b"not a zip")
    with pytest.raises(RobustlabError, match="cannot read"):
        read_shard(path)


def test_resume_keeps_finished_shards_and_rewrites_a_missing_one(saved_run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """--resume: finished shards are not rewritten; a deleted one comes back with the same arrays;
    a fresh run with the same seed writes the same arrays (deterministic)."""
    out, suite, card = saved_run
    root = root_of(out)
    files = sorted(p for p in root.rglob("*.npz"))
    before = {p: (p.stat().st_mtime_ns, read_shard(p)) for p in files}
    gone = eps_dir(root, "pgd_linf", 0.1) / "000000016-000000032.npz"
    gone.unlink()
    card2 = _evaluate(out, suite, "--save-adversarial", "--resume")
    assert gone.is_file()
    for p, (mtime, arrays) in before.items():
        if p != gone:
            assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten on --resume"
        again = read_shard(p)
        assert all(np.array_equal(arrays[k], again[k]) for k in FIELDS), p
    assert _check(card2, "uncertainty")["metrics"] == _check(card, "uncertainty")["metrics"]
    fresh = _evaluate(tmp_path / "fresh", suite, "--save-adversarial")
    for p in files:
        other = root_of(tmp_path / "fresh") / p.relative_to(root)
        assert all(np.array_equal(read_shard(p)[k], read_shard(other)[k]) for k in FIELDS), p
    assert _check(fresh, "pgd_linf")["metrics"] == _check(card, "pgd_linf")["metrics"]


def test_without_the_option_nothing_is_written_and_the_own_pgd_is_used(saved_run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    _out, suite, card = saved_run
    plain = _evaluate(tmp_path / "plain", suite)
    assert not (tmp_path / "plain" / "adversarial").exists() and "save_adversarial" not in plain["run"]
    assert [c["id"] for c in plain["checks"]] == ["clean", "uncertainty", "pgd_linf", "autoattack", "fgsm"]  # the suite's order
    unc = _check(plain, "uncertainty")
    assert any("/adversarial/pgd/eps_" in k for k in unc["metrics"]) and not any("/adv/" in k for k in unc["metrics"])
    assert "--save-adversarial was off" in unc["definitions"]["uncertainty/adversarial_source"]  # the scorecard names its source either way
    for cid in ("pgd_linf", "autoattack", "fgsm"):  # saving changes no number of the adversarial checks
        assert _check(plain, cid)["metrics"] == _check(card, cid)["metrics"]


def test_option_on_without_adversarial_checks_falls_back_and_says_so(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: u\nsave_adversarial: true\nchecks:\n  - check: uncertainty\n    params: {corruptions: [contrast], severities: [5], n_boot: 10, ood: [], shift: [], adv_limit: 16, adv_steps: 2}\n")
    card = _evaluate(tmp_path / "run", suite)
    unc = _check(card, "uncertainty")
    assert card["run"]["save_adversarial"] is True
    assert any("/adversarial/pgd/eps_" in k for k in unc["metrics"])
    assert "own L-inf PGD" in unc["definitions"]["uncertainty/adversarial_source"] and any("no adversarial check" in n for n in unc["notes"])


def test_suite_level_option_is_validated() -> None:
    from robustlab.suite import parse_suite

    assert parse_suite("save_adversarial: true\nchecks: [clean]").save_adversarial is True
    assert parse_suite("checks: [clean]").save_adversarial is False
    with pytest.raises(SuiteError, match="save_adversarial must be true or false"):
        parse_suite("save_adversarial: 'yes'\nchecks: [clean]")


def test_shards_hold_no_pickles(saved_run: tuple[Path, Path, dict]) -> None:
    out, _suite, _card = saved_run
    for p in root_of(out).rglob("*.npz"):
        with np.load(p, allow_pickle=False) as z:  # would raise on an object array
            assert all(z[k].dtype != object for k in z.files)
        assert not os.access(p, os.X_OK)


MEMORY_SUITE = """\
name: advdisk-memory
save_adversarial: true
checks:
  - check: pgd
    params: {epsilons: [0.05, 0.1], steps: 5, audit: false}
  - check: autoattack
    params: {epsilons: [0.1], n_iter: 3, square_queries: 10, audit: false}
  - check: minimal_norm
    params: {attack: fmn, norm: l2, steps: 5, epsilons: [0.5, 1.0], audit: false}
  - check: uncertainty
    params: {corruptions: [contrast], severities: [5], n_boot: 10, ood: [], shift: []}
"""
#: how much more a check's peak RSS (over the RSS it started from) may rise on 600 digits than on
#: 100, with the examples written to disk (MB). Holding every example instead would add only
#: 0.13 MB per copy on 8x8 digits; the bound is the one tests/test_memory.py applies to every check.
ADV_GROWTH_BOUND_MB = 30.0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-check peak RSS needs Linux /proc")
def test_saving_examples_keeps_memory_bounded_and_sizes_as_stated(tmp_path: Path) -> None:
    """pgd (2 epsilons), autoattack, minimal_norm (one image per point whatever its epsilons) and
    uncertainty with the option on, on 100 and 600 digits, each
    size in its own process: per-check peak RSS growth below ADV_GROWTH_BOUND_MB, and the files hold
    the stated arrays: per example 64 float32 pixels, 22 bytes of labels/flags/norm, the id, plus a
    bounded per-shard overhead."""
    import subprocess
    import sys
    import textwrap

    here = Path(__file__).resolve().parent
    (tmp_path / "suite.yaml").write_text(MEMORY_SUITE)
    prog = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np, torch
        sys.path.insert(0, {str(here / "plugins")!r})
        from rl_memory_probe import _wrap
        from robustlab.checks import CHECKS
        from robustlab.cli import main
        from robustlab.data import load_dataset
        n, out = int(sys.argv[1]), Path(sys.argv[2])
        out.mkdir(parents=True)
        parts = [load_dataset("digits", split=s) for s in ("test", "train")]
        x = torch.cat([p.images() for p in parts])[:n]
        y = torch.cat([p.y for p in parts])[:n]
        np.savez(out / "d.npz", x=x.numpy(), y=y.numpy())
        peaks, starts = {{}}, {{}}
        for _n, cls in list(CHECKS.items()):
            cls.run = _wrap(cls.run, peaks, starts)
        try:
            main(["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{{out / 'd.npz'}}", "--dataset", "digits", "--suite", {str(tmp_path / "suite.yaml")!r},
                  "--out", str(out / "run"), "--no-mlflow", "--no-report", "--quiet", "--batch-size", "50", "--device", "cpu", "--threads", "1"], standalone_mode=False)
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        card = json.loads((out / "run" / "scorecard.json").read_text())
        print(json.dumps({{"peaks": peaks, "start": starts, "status": {{c["id"]: c["status"] for c in card["checks"]}}}}))
        """
    )
    procs = {n: subprocess.Popen([sys.executable, "-c", prog, str(n), str(tmp_path / str(n))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (100, 600)}
    res = {}
    for n, p in procs.items():
        o, e = p.communicate(timeout=900)
        assert p.returncode == 0, e[-3000:]
        res[n] = json.loads(o.strip().splitlines()[-1])
        assert all(s == "ok" for s in res[n]["status"].values()), res[n]
    growth = {k: round((res[600]["peaks"][k] - res[600]["start"][k]) - (res[100]["peaks"][k] - res[100]["start"][k]), 1) for k in res[600]["peaks"]}
    assert max(growth.values()) < ADV_GROWTH_BOUND_MB, f"peak RSS growth per check, MB, 600 vs 100 digits: {growth}"
    for n in (100, 600):
        root = root_of(tmp_path / str(n) / "run")
        index = load_index(root)
        files = [p for p in root.rglob("*.npz")]
        assert index["bytes"] == sum(p.stat().st_size for p in files)
        cells = [(cid, e) for cid, c in index["checks"].items() for e in [*c.get("by_eps", {}).values(), *([c["minimal"]] if "minimal" in c else [])]]
        assert len(cells) == 4 and all(e["n"] == n for _c, e in cells)
        id_len = max(len(str(i)) for i in read_shard(files[0])["ids"])
        shards = len(files)
        low = 4 * n * (64 * 4 + 22)
        high = 4 * n * (64 * 4 + 22 + 4 * (id_len + 4)) + shards * 2500
        assert low <= index["bytes"] <= high, (n, index["bytes"], low, high)


MINIMAL_SUITE = """\
name: advdisk-minimal
checks:
  - check: uncertainty
    params: {corruptions: [contrast], severities: [5], n_boot: 10, ood: [], shift: [], adv_limit: 16, adv_steps: 2}
  - check: minimal_norm
    params: {attack: fmn, norm: l2, steps: 10, epsilons: [0.5, 1.0, 2.0], audit: false}
"""


@pytest.fixture(scope="module")
def minimal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("advdisk_minimal")
    suite = d / "suite.yaml"
    suite.write_text(MINIMAL_SUITE)
    return d / "run", suite, _evaluate(d / "run", suite, "--save-adversarial")


def test_minimal_norm_examples_saved_and_read_at_each_epsilon(minimal_run: tuple[Path, Path, dict]) -> None:
    """minimal_norm with --save-adversarial: one ``minimal/`` folder of per-batch shards holding each
    point's minimal example (re-predicts to the recorded, wrong prediction), its norm exactly as the
    check counted it, and the clean image where none was found; read at eps by :class:`MinimalAt`
    (minimal example where norm <= eps, else the clean image), a point is broken exactly when the
    check counts it not robust, and the uncertainty check's accuracy under those inputs is the
    check's robust accuracy at that eps."""
    from robustlab.adversarial_examples import MinimalAt, minimal_dir
    from robustlab.data import load_dataset
    from robustlab.models import load_model

    out, _suite, card = minimal_run
    model = load_model("zoo:digits-cnn")
    data = load_dataset("digits", split="test").limit(N)
    chk = _check(card, "minimal_norm")
    mins = np.asarray([np.inf if v is None else v for v in chk["per_sample"]["min_norm"]], dtype=np.float64)
    correct, found = mins > 0, (mins > 0) & np.isfinite(mins)
    assert found.sum() >= 5 and (found & (mins > 0.5)).any() and (found & (mins <= 2.0)).any()  # broken below and above some eps
    entry = load_index(root_of(out))["checks"]["minimal_norm"]
    assert entry["kind"] == "minimal" and entry["epsilons"] == [0.5, 1.0, 2.0] and "by_eps" not in entry
    assert [(r["start"], r["stop"]) for r in entry["minimal"]["shards"]] == [(s, min(s + BS, N)) for s in range(0, N, BS)]
    assert all(Path(root_of(out) / r["file"]).parent == minimal_dir(root_of(out), "minimal_norm") for r in entry["minimal"]["shards"])
    for r in entry["minimal"]["shards"]:
        a = read_shard(root_of(out) / r["file"], sha256=r["sha256"])
        s, t = r["start"], r["stop"]
        assert list(a["ids"]) == data.ids[s:t] and a["y"].tolist() == data.y[s:t].tolist()
        x, xa = data.images(slice(s, t)), torch.from_numpy(a["x_adv"])
        with torch.no_grad():
            assert (model(xa).argmax(1).numpy() == a["pred"]).all()
        assert (a["correct"] == correct[s:t]).all() and (a["success"] == found[s:t]).all()
        assert (a["pred"][a["success"]] != a["y"][a["success"]]).all()
        assert (a["norm"][a["success"]] == mins[s:t][a["success"]].astype(np.float32)).all() and (a["norm"][~a["success"]] == 0).all()
        assert torch.equal(xa[~torch.from_numpy(a["success"])], x[~torch.from_numpy(a["success"])])  # clean image where no example
        assert xa.min() >= 0 and xa.max() <= 1
    unc = _check(card, "uncertainty")["metrics"]
    clean = data.images().numpy()
    for e in (0.5, 1.0, 2.0):
        b = MinimalAt(root_of(out), "minimal_norm", e).read(list(range(N)), data.ids, clean=clean)
        robust = np.asarray(chk["per_sample"][f"robust/eps_{e:.4g}"], dtype=bool)
        assert (b.success == (correct & ~robust)).all(), e
        assert ((b.pred == b.y) == robust).all(), e  # the model's prediction on the returned input
        with torch.no_grad():
            assert (model(torch.from_numpy(b.x_adv)).argmax(1).numpy() == b.pred).all()
        acc = unc[f"uncertainty/model/adv/minimal_norm/eps_{e:.4g}/accuracy"]
        assert acc == pytest.approx(chk["metrics"][f"adversarial/minimal_norm/eps_{e:.4g}/robust_accuracy"]), e
    assert not [k for k in unc if "/adversarial/pgd/" in k], "the own PGD ran although minimal_norm's examples were there"
    assert "conformal_coverage_vs_eps_minimal_norm" in _check(card, "uncertainty")["series"]
    with pytest.raises(RobustlabError, match="minimal"):
        MinimalAt(root_of(out), "nope", 0.5)


def test_minimal_norm_resume_rewrites_only_a_missing_shard(minimal_run: tuple[Path, Path, dict]) -> None:
    """--resume: the minimal shards of finished batches are kept as they are; a deleted one is
    recomputed from the same per-sample seeds (same arrays) and indexed again; same scorecard."""
    from robustlab.adversarial_examples import minimal_dir

    out, suite, card = minimal_run
    folder = minimal_dir(root_of(out), "minimal_norm")
    before = {p: (p.stat().st_mtime_ns, read_shard(p)) for p in sorted(folder.glob("*.npz"))}
    gone = folder / "000000016-000000032.npz"
    gone.unlink()
    card2 = _evaluate(out, suite, "--save-adversarial", "--resume")
    assert gone.is_file()
    for p, (mtime, arrays) in before.items():
        if p != gone:
            assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten on --resume"
        assert all(np.array_equal(arrays[k], read_shard(p)[k]) for k in FIELDS), p
    rows = load_index(root_of(out))["checks"]["minimal_norm"]["minimal"]["shards"]
    assert all(read_shard(root_of(out) / r["file"], sha256=r["sha256"]) for r in rows)  # index hashes match the rewritten shard
    assert _check(card2, "uncertainty")["metrics"] == _check(card, "uncertainty")["metrics"]
    assert _check(card2, "minimal_norm")["metrics"] == _check(card, "minimal_norm")["metrics"]
