"""``--resume`` with saved adversarial examples never trusts a shard it cannot verify: a shard that no
longer matches the sha256 recorded when it was written (``.sha256`` beside it, else ``index.json``)
refuses the resume with one ``error:`` line naming it (exit 2, nothing computed lost), and is never
re-hashed into ``index.json``; a shard with no recorded hash (a run killed between the shard and its
hash) is recomputed, not indexed as it is; deleting a refused shard lets the resume recompute it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.adversarial_examples import FIELDS, INDEX, eps_dir, hash_path, load_index, read_shard, root_of, shard_path, write_shard
from robustlab.cli import main
from robustlab.errors import RobustlabError
from robustlab.signing import sha256_file

SUITE = """\
name: advresume
save_adversarial: true
checks:
  - check: clean
  - check: pgd
    id: pgd_linf
    params: {norm: linf, steps: 2, epsilons: [0.05, 0.1], audit: false}
  - check: uncertainty
    params: {corruptions: [contrast], severities: [5], n_boot: 10, ood: [], shift: [], adv_limit: 32, adv_steps: 2}
"""
N, BS = 32, 16
FAST = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report", "--device", "cpu"]


def _evaluate(out: Path, suite: Path, *extra: str):
    return CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", str(N), "--batch-size", str(BS), "--seed", "1",
                                     "--out", str(out), *FAST, *extra])


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, r.stderr
    return line


def _card(out: Path) -> dict:
    return json.loads((out / "scorecard.json").read_text())


def _check(card: dict, cid: str) -> dict:
    return next(c for c in card["checks"] if c["id"] == cid)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One uninterrupted run: (its output folder, the suite, its scorecard). Tests work on copies."""
    d = tmp_path_factory.mktemp("advresume")
    suite = d / "suite.yaml"
    suite.write_text(SUITE)
    r = _evaluate(d / "run", suite)
    assert r.exit_code == 0, (r.output, r.exception)
    return d / "run", suite, _card(d / "run")


def _copy(reference: tuple[Path, Path, dict], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def _tamper(path: Path) -> None:
    """What the probe did: every example replaced by zeros and counted a success."""
    z = {k: v for k, v in np.load(path, allow_pickle=False).items()}
    z["x_adv"] = np.zeros_like(z["x_adv"])
    z["success"][:] = True
    z["pred"][:] = 0
    with open(path, "wb") as f:
        np.savez(f, **z)


def _unindex(out: Path, check_id: str) -> None:
    """What a run killed before indexing leaves: shards on disk, no index entry for them."""
    doc = load_index(root_of(out))
    doc["checks"].pop(check_id)
    (root_of(out) / INDEX).write_text(json.dumps(doc))


TARGET = ("pgd_linf", 0.1, 0, 16)


def _target(out: Path) -> Path:
    cid, eps, a, b = TARGET
    return shard_path(eps_dir(root_of(out), cid, eps), a, b)


@pytest.mark.parametrize("how", ["indexed", "indexed_without_sha256_file", "not_indexed"])
def test_a_changed_shard_refuses_the_resume_and_is_never_reindexed(reference, tmp_path: Path, how: str) -> None:
    """The probe: a finished run (or one killed before it indexed pgd's shards: ``not_indexed``), one
    shard overwritten, then ``--resume``: exit 2, one line naming the file and what to do; the
    scorecard, index.json and the changed file stay as they were (nothing computed is lost)."""
    out = _copy(reference, tmp_path)
    shard = _target(out)
    if how == "indexed_without_sha256_file":  # a folder written before the .sha256 files: index.json vouches
        for p in root_of(out).rglob("*.sha256"):
            p.unlink()
    if how == "not_indexed":
        _unindex(out, "pgd_linf")
    _tamper(shard)
    tampered = sha256_file(shard)
    card_before = (out / "scorecard.json").read_bytes()
    index_before = (root_of(out) / INDEX).read_bytes()
    line = _one_error_line(_evaluate(out, reference[1], "--resume"))
    assert str(shard) in line and "sha256" in line and "delete it" in line, line
    assert (out / "scorecard.json").read_bytes() == card_before
    assert (root_of(out) / INDEX).read_bytes() == index_before
    assert tampered not in (root_of(out) / INDEX).read_text()
    assert sha256_file(shard) == tampered


def test_deleting_the_refused_shard_recomputes_it_and_gives_the_uninterrupted_numbers(reference, tmp_path: Path) -> None:
    """Doing what the error says: the shard comes back with the reference arrays, index.json lists the
    new file's hash, and every check (the uncertainty check reads the saved examples) reports
    the uninterrupted run's numbers."""
    out = _copy(reference, tmp_path)
    shard = _target(out)
    want = read_shard(shard)
    _tamper(shard)
    _one_error_line(_evaluate(out, reference[1], "--resume"))
    shard.unlink()
    r = _evaluate(out, reference[1], "--resume")
    assert r.exit_code == 0, (r.output, r.exception)
    got = read_shard(shard)
    assert all(np.array_equal(want[k], got[k]) for k in FIELDS)
    rows = {r["file"]: r["sha256"] for e in load_index(root_of(out))["checks"]["pgd_linf"]["by_eps"].values() for r in e["shards"]}
    assert rows[str(shard.relative_to(root_of(out)))] == sha256_file(shard)
    card = _card(out)
    for cid in ("clean", "pgd_linf", "uncertainty"):
        assert _check(card, cid)["metrics"] == _check(reference[2], cid)["metrics"], cid


def test_a_shard_without_a_recorded_sha256_is_recomputed_not_trusted(reference, tmp_path: Path) -> None:
    """A run killed after writing a shard but before recording its hash anywhere: nothing vouches for
    the file, so the resume recomputes it (same arrays as the uninterrupted run) instead of indexing
    whatever is there, and the uncertainty check gives the uninterrupted numbers."""
    out = _copy(reference, tmp_path)
    shard = _target(out)
    want = read_shard(shard)
    _unindex(out, "pgd_linf")
    hash_path(shard).unlink(missing_ok=True)
    _tamper(shard)
    r = _evaluate(out, reference[1], "--resume")
    assert r.exit_code == 0, (r.output, r.exception)
    got = read_shard(shard)
    assert all(np.array_equal(want[k], got[k]) for k in FIELDS)
    assert hash_path(shard).read_text().split()[0] == sha256_file(shard)
    rows = [r for e in load_index(root_of(out))["checks"]["pgd_linf"]["by_eps"].values() for r in e["shards"]]
    assert len(rows) == 2 * (N // BS)
    assert all(read_shard(root_of(out) / r["file"], sha256=r["sha256"]) for r in rows)
    card = _card(out)
    for cid in ("pgd_linf", "uncertainty"):
        assert _check(card, cid)["metrics"] == _check(reference[2], cid)["metrics"], cid


def test_a_run_killed_before_indexing_then_tampered_refuses_the_resume(reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real interruption: the run stops (KeyboardInterrupt) the moment pgd would index its first
    epsilon, so its shards exist on disk with no index entry; one is overwritten; ``--resume``
    refuses it rather than indexing it."""
    import robustlab.adversarial_examples as ae

    out = tmp_path / "run"

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ae, "record_epsilon", interrupted)
    r = _evaluate(out, reference[1])
    assert r.exit_code != 0
    monkeypatch.undo()
    assert "pgd_linf" not in load_index(root_of(out))["checks"]
    shard = shard_path(eps_dir(root_of(out), "pgd_linf", 0.05), 0, 16)
    assert shard.is_file()
    _tamper(shard)
    line = _one_error_line(_evaluate(out, reference[1], "--resume"))
    assert str(shard) in line, line
    shard.unlink()
    r = _evaluate(out, reference[1], "--resume")
    assert r.exit_code == 0, (r.output, r.exception)
    card = _card(out)
    for cid in ("clean", "pgd_linf", "uncertainty"):
        assert _check(card, cid)["metrics"] == _check(reference[2], cid)["metrics"], cid


def test_sha256_file_is_written_with_the_shard_and_an_edited_one_is_refused(tmp_path: Path) -> None:
    from robustlab.adversarial_examples import check_index_for_resume, record_epsilon
    from robustlab.errors import ResumeError

    root = tmp_path / "adversarial"
    path = shard_path(eps_dir(root, "c", 0.1), 0, 2)
    write_shard(path, ids=["a", "b"], y=np.zeros(2), x_adv=np.zeros((2, 1, 2, 2), dtype=np.float32), pred=np.zeros(2), correct=[True, True],
                success=[False, False], norm=np.zeros(2))
    assert hash_path(path).read_text() == f"{sha256_file(path)}  {path.name}\n"  # sha256sum -c format
    entry = record_epsilon(root, check_id="c", check="pgd", norm="linf", eps=0.1, epsilons=[0.1], n=2)
    assert entry["shards"][0]["sha256"] == sha256_file(path)
    check_index_for_resume(root)
    hash_path(path).write_text("0" * 64 + f"  {path.name}\n")
    with pytest.raises(ResumeError, match="does not match"):
        check_index_for_resume(root)
    with pytest.raises(RobustlabError, match="does not match"):
        record_epsilon(root, check_id="c", check="pgd", norm="linf", eps=0.1, epsilons=[0.1], n=2)
    hash_path(path).write_text("not a hash\n")
    with pytest.raises(ResumeError, match="not the sha256"):
        check_index_for_resume(root)
