"""The artifact folder: files stored under keys the service builds from ids and fixed names
(``p<project>/v<version>/model.safetensors``, ``jobs/<job id>/scorecard.json``), never from text a
request sent; :func:`path_of` re-checks every key before it touches the file system."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from .models import Artifact
from ..signing import sha256_file

KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100}){0,5}$")


class BadKey(ValueError):
    pass


def path_of(root: Path, key: str) -> Path:
    """The file of ``key`` under ``root`` (``BadKey`` for anything that could leave it)."""
    if not KEY_RE.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise BadKey(f"bad artifact key {key!r}")
    p = (root / key).resolve()
    if root.resolve() not in p.parents:
        raise BadKey(f"bad artifact key {key!r}")
    return p


def store_file(s: Session, root: Path, src: Path, key: str, *, kind: str, project_id: int, job_id: str | None = None,
               scorecard_id: int | None = None, move: bool = False) -> Artifact:
    """Copy (or move) ``src`` to ``key`` and record it."""
    dst = path_of(root, key)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    if move:
        shutil.move(str(src), tmp)
    else:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)
    art = Artifact(project_id=project_id, job_id=job_id, scorecard_id=scorecard_id, kind=kind, key=key, sha256=sha256_file(dst), size=dst.stat().st_size)
    s.add(art)
    s.flush()
    return art
