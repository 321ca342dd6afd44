"""JUnit XML for CI systems: one ``<testcase>`` per gate rule.

A failed rule is a ``<failure>``; an inconclusive rule is an ``<error type="inconclusive">`` (so CI
shows it, rather than hiding it as skipped); a rule skipped by ``if_missing: skip`` is ``<skipped>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from ..scorecard import atomic_write_text
from .rules import GateReport, Outcome

if TYPE_CHECKING:
    from ..scorecard import Scorecard


def junit_xml(report: GateReport, card: "Scorecard | None" = None, *, suite_name: str = "robustlab gate") -> str:
    """Render ``report`` as a JUnit XML document (string)."""
    root = ET.Element("testsuites", name=suite_name)
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(report.results)),
        failures=str(report.count(Outcome.FAIL)),
        errors=str(report.count(Outcome.INCONCLUSIVE)),
        skipped=str(report.count(Outcome.SKIPPED)),
    )
    props = ET.SubElement(ts, "properties")
    meta = {"outcome": report.outcome.value, "policy": report.policy_source, "baseline": report.baseline_source}
    if card is not None:
        meta.update({
            "model.spec": str(card.model.get("spec", "")),
            "model.sha256": str(card.model.get("sha256", "")),
            "data.spec": str(card.data.get("spec", "")),
            "suite": str(card.suite.get("name", "")),
            "seed": str(card.run.get("seed", "")),
        })
    for k, v in meta.items():
        ET.SubElement(props, "property", name=k, value=v)
    for r in report.results:
        tc = ET.SubElement(ts, "testcase", classname=f"robustlab.gate.{r.kind}", name=r.name)
        if r.outcome is Outcome.FAIL:
            el = ET.SubElement(tc, "failure", message=r.message, type="gate-failed")
            el.text = r.message
        elif r.outcome is Outcome.INCONCLUSIVE:
            el = ET.SubElement(tc, "error", message=r.message, type="inconclusive")
            el.text = r.message
        elif r.outcome is Outcome.SKIPPED:
            ET.SubElement(tc, "skipped", message=r.message)
        out = ET.SubElement(tc, "system-out")
        out.text = f"{r.outcome.value}: {r.message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: GateReport, path: str | Path, card: "Scorecard | None" = None) -> Path:
    return atomic_write_text(Path(path), junit_xml(report, card))
