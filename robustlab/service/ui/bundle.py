"""The evidence bundle of an evaluation: one zip with the scorecard, its signature, the report,
the per-sample CSV, the policy, the environment, JUnit and gate summary when there are any, the
signature status as verified now against the trust store, and a manifest of sha256 sums."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ..artifacts import path_of
from ..models import StoredScorecard
from .data import artifacts_of, read_raw, verify_now

#: file name in the bundle of each stored kind
NAMES = {"scorecard": "scorecard.json", "report": "report.html", "samples": "per_sample.csv", "policy": "policy.yaml",
         "environment": "environment.json", "junit": "junit.xml", "gate": "gate-summary.md"}


def build_bundle(s: Session, root: Path, card: StoredScorecard) -> bytes:
    """The zip's bytes. A pushed card has no stored report, CSV or environment: they are made here
    from the scorecard by the same functions the service's own runs use."""
    from ...scorecard import Scorecard
    from ...tracking.mlflow_log import write_per_sample_csv
    from ..runjob import environment_json

    raw = read_raw(root, card)
    arts = artifacts_of(s, card)
    files: dict[str, bytes] = {}
    for kind, art in arts.items():
        if kind == "signature":
            name = "signature.json" if card.job_id else "scorecard.json.sig"
        else:
            name = NAMES.get(kind, "")
        if name:
            files[name] = path_of(root, art.key).read_bytes()
    files["scorecard.json"] = path_of(root, card.artifact_key).read_bytes()
    v = verify_now(s, root, card, raw)
    with tempfile.TemporaryDirectory(prefix="rl-bundle-") as tmp:
        t = Path(tmp)
        if "report.html" not in files:
            from ...report import render_report

            files["report.html"] = render_report(Scorecard.from_dict(raw), verification=v).encode("utf-8")
        if "per_sample.csv" not in files:
            csv = write_per_sample_csv(Scorecard.from_dict(raw).in_key_schema(), t / "per_sample.csv")
            if csv is not None and csv.is_file():
                files["per_sample.csv"] = csv.read_bytes()
        if "environment.json" not in files:
            files["environment.json"] = environment_json(raw, t / "environment.json").read_bytes()
    status: dict[str, Any] = {"state": v.state.value, "key_id": v.key_id, "signed_at": v.signed_at, "messages": list(v.messages),
                              "stored_state": card.signature_state, "source": card.source.value,
                              "gate_outcome": card.gate_outcome, "gate_exit_code": card.gate_exit_code,
                              "note": "verified against the service's trust store when this bundle was made"}
    files["verification.json"] = (json.dumps(status, indent=1) + "\n").encode()
    manifest = {name: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for name, b in sorted(files.items())}
    files["MANIFEST.json"] = (json.dumps({"evaluation": card.id, "job": card.job_id, "files": manifest}, indent=1) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, b in sorted(files.items()):
            z.writestr(name, b)
    return buf.getvalue()
