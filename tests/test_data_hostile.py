"""Data that lies about itself: image folders whose files change under ``--resume``, class folders that
are not the model's classes, built-in sets that must name themselves, npz ``dataset`` / ``classes``
entries that do not fit the labels. Each is refused with one ``error:`` line (exit 2) or handled right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.data import load_dataset
from robustlab.data.naming import resolve_dataset_name
from robustlab.errors import DataError

RUN = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report", "--seed", "0"]


def _digits(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    d = load_dataset("digits", split="test").limit(n)
    return (d.images().numpy()[:, 0] * 255).round().astype(np.uint8), d.y.numpy()


def _folder(root: Path, only: set[int] | None = None, names: dict[int, str] | None = None, n: int = 40) -> Path:
    """The first ``n`` test digits as PNGs in ``root/<class>/<i>.png`` (class folders named by ``names``)."""
    from PIL import Image

    x, y = _digits(n)
    for i, (im, c) in enumerate(zip(x, y.tolist())):
        if only is not None and c not in only:
            continue
        d = root / (names or {}).get(c, str(c))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im, "L").save(d / f"{i:03d}.png")
    return root


def _suite(tmp_path: Path, body: str = "  - check: clean\n") -> Path:
    s = tmp_path / "s.yaml"
    s.write_text("name: t\nchecks:\n" + body)
    return s


def _evaluate(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["evaluate", *args, *RUN])
    return r.exit_code, r.output


def _card(out: Path) -> dict:
    return json.loads((out / "scorecard.json").read_text())


# -- 1. the content of folder: files is in the fingerprint --------------------------------------
def test_folder_content_sha256_covers_the_files_evaluated(tmp_path: Path) -> None:
    from PIL import Image

    root = _folder(tmp_path / "f")
    before = load_dataset(f"folder:{root}")
    h, h5 = before.content_sha256(), before.limit(5).content_sha256()
    last, first = root / before.ids[-1], root / before.ids[0]
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(last)  # same ids, labels, size and mode: only the pixels differ
    after = load_dataset(f"folder:{root}")
    assert after.content_sha256() != h
    assert after.limit(5).content_sha256() == h5  # a file outside the evaluated subset does not count
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(first)
    assert load_dataset(f"folder:{root}").limit(5).content_sha256() != h5
    assert after.subset([3, 1]).files == [after.files[3], after.files[1]]  # type: ignore[index]


def test_resume_refuses_changed_folder_images(tmp_path: Path) -> None:
    from PIL import Image

    root, suite = _folder(tmp_path / "f"), _suite(tmp_path)
    args = ["--model", "zoo:digits-cnn", "--suite", str(suite), "--data", f"folder:{root}", "--out", str(tmp_path / "o")]
    code, out = _evaluate(*args)
    assert code == 0, out
    for p in root.rglob("*.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(p)
    code, out = _evaluate(*args, "--resume")
    assert code == 2 and "cannot resume" in out and "data" in out, out


# -- 2. folder: labels by the model's class names ------------------------------------------------
def test_folder_of_one_class_is_labelled_by_name(tmp_path: Path) -> None:
    root, suite = _folder(tmp_path / "five", only={5}), _suite(tmp_path)
    code, out = _evaluate("--model", "zoo:digits-cnn", "--suite", str(suite), "--data", f"folder:{root}", "--out", str(tmp_path / "o"))
    assert code == 0, out
    card = _card(tmp_path / "o")
    assert set(card["data"]["labels"]) == {5} and card["data"]["classes"] == [str(i) for i in range(10)]
    assert card["checks"][0]["metrics"]["clean/accuracy"] > 0.5  # was 0.0: every 5 scored against label 0


def test_match_classes_rules(tmp_path: Path) -> None:
    digits = [str(i) for i in range(10)]
    # permuted names: by name, not by sorted position
    ds = load_dataset(f"folder:{_folder(tmp_path / 'p', only={3, 7})}")
    assert ds.y.unique().tolist() == [0, 1]
    assert ds.match_classes(digits, 10).y.unique().tolist() == [3, 7]
    assert ds.match_classes(list(reversed(digits)), 10).y.unique().tolist() == [2, 6]
    # a complete set of folders that are not class names: ImageFolder convention (sorted names = indices)
    letters = {c: "abcdefghij"[c] for c in range(10)}
    full = load_dataset(f"folder:{_folder(tmp_path / 'w', names=letters)}")
    assert torch.equal(full.match_classes(digits, 10).y, full.y) and torch.equal(full.match_classes(None, 10).y, full.y)
    # too few folders that are not class names, or a model without class names: refused
    with pytest.raises(DataError, match=r"2 class folder\(s\) \('a', 'b'\) for a model with 10 classes.*name the folders after"):
        load_dataset(f"folder:{_folder(tmp_path / 'ab', only={0, 1}, names=letters)}").match_classes(digits, 10)
    with pytest.raises(DataError, match="the model has no class names, so the labels are unknown; pass --class-names"):
        ds.match_classes(None, 10)
    # a folder named after a class that sorts to another class's position: refused, not mislabelled
    clash = load_dataset(f"folder:{_folder(tmp_path / 'c', names={0: 'zero'})}")
    with pytest.raises(DataError, match="class folder '1' is named after the model's class 1 but sorts to position 0"):
        clash.match_classes(digits, 10)
    # data that is not positional is left alone
    assert load_dataset("digits").match_classes(["x"] * 10, 10).classes == digits


def test_folder_of_unknown_class_folders_is_refused_in_one_line(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", only={3, 5}, names={3: "cat", 5: "dog"})
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", str(_suite(tmp_path)),
                        "--data", f"folder:{root}", "--out", str(tmp_path / "o"), *RUN], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--class-names" in lines[0], r.stderr


# -- 3. built-in sets name themselves ----------------------------------------------------------
def test_builtin_sets_name_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    assert load_dataset("digits").extra["dataset"] == "digits"
    pytest.importorskip("foolbox")
    assert load_dataset("samples:mnist").extra["dataset"] == "mnist"

    class FakeMnist:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            self.data, self.targets = np.zeros((4, 28, 28), np.uint8), [0, 1, 2, 3]

    monkeypatch.setattr(tvd, "FashionMNIST", FakeMnist)
    assert load_dataset("fashion-mnist").extra["dataset"] == "fashion-mnist"
    assert resolve_dataset_name(None, "digits", "digits", data_source="the data spec digits") == ("digits", "the data spec digits")
    assert resolve_dataset_name(None, "digits", "digits", data_source="x", data_is_model_default=True) == ("digits", "the model's default data set")


def test_state_dict_on_builtin_data_gets_its_budget(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from robustlab.models.architectures import DigitsCNN

    save_file(DigitsCNN().state_dict(), str(tmp_path / "g.safetensors"))
    suite = _suite(tmp_path, "  - check: fgsm\n")
    base = ["--model", str(tmp_path / "g.safetensors"), "--arch", "zoo-arch:digits-cnn", "--data", "digits", "--limit", "8", "--suite", str(suite)]
    code, out = _evaluate(*base, "--out", str(tmp_path / "o"))
    assert code == 0, out  # was 3: "no standard adversarial budget is known"
    assert _card(tmp_path / "o")["data"]["dataset"] == "digits"
    code, out = _evaluate(*base, "--dataset", "mnist", "--out", str(tmp_path / "p"))
    assert code == 2 and "name it once" in out, out


# -- 4./5. npz entries that do not fit -------------------------------------------------------
def test_npz_empty_dataset_entry_is_a_one_line_error(tmp_path: Path) -> None:
    x, y = _digits(20)
    np.savez(tmp_path / "e.npz", x=x, y=y, dataset=np.array([], dtype=str))
    with pytest.raises(DataError, match="the 'dataset' entry must be one name"):
        load_dataset(f"npz:{tmp_path / 'e.npz'}")
    np.savez(tmp_path / "two.npz", x=x, y=y, dataset=np.array(["digits", "mnist"]))
    with pytest.raises(DataError, match="must be one name"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", str(_suite(tmp_path)),
                        "--data", f"npz:{tmp_path / 'e.npz'}", "--out", str(tmp_path / "o"), *RUN], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "'dataset' entry" in lines[0], r.stderr


def test_npz_with_too_few_class_names_is_refused(tmp_path: Path) -> None:
    x, y = _digits(20)
    np.savez(tmp_path / "c3.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"'classes' has 3 name\(s\) but labels go up to 9"):
        load_dataset(f"npz:{tmp_path / 'c3.npz'}")
    np.savez(tmp_path / "c10.npz", x=x, y=y, classes=np.array(list("abcdefghij")))
    assert load_dataset(f"npz:{tmp_path / 'c10.npz'}").classes == list("abcdefghij")
