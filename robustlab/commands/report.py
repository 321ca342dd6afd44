"""``robustlab report | gate | compare | sign | verify``: everything that reads a finished scorecard.

None of these commands imports torch. Exit codes: 0 success/pass, 1 a gate failed or verification
failed, 2 usage or input error, 3 inconclusive gate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import number

if TYPE_CHECKING:
    from ..scorecard import Scorecard

_SCORECARD = click.Path(dir_okay=False, path_type=Path)


def _load(ref: str, mlflow_uri: str | None) -> "Scorecard":
    from ..tracking import load_baseline

    return load_baseline(ref, uri=mlflow_uri)


def _check_report_path(out: Path, scorecard: Path) -> None:
    """Refuse an output the report's atomic write would damage: an empty name (the current folder), the
    scorecard itself, or something that is not a regular file (a device such as /dev/full, a pipe)."""
    from ..errors import RobustlabError, printable

    if out.name in ("", ".", ".."):
        raise RobustlabError("the report's output path is empty or a folder; pass -o FILE.html.")
    if out.exists() and not out.is_file():
        raise RobustlabError(f"{printable(out)} is not a regular file (a device, pipe or socket); pass -o FILE.html.")
    if out.exists() and out.samefile(scorecard):
        raise RobustlabError(f"{printable(out)} is the scorecard itself, which the report would replace; pass another -o, e.g. report.html.")
    if out.absolute() == scorecard.absolute().with_name(scorecard.name + ".sig"):  # read as its detached signature afterwards
        raise RobustlabError(f"{printable(out)} is where the scorecard's detached signature goes; pass another -o, e.g. report.html.")


@click.command("report")
@click.argument("scorecard", type=_SCORECARD)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="HTML file to write [default: report.html next to the scorecard].")
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Gate policy YAML to evaluate and show in the verdict section.")
@click.option("--baseline", default=None, help="Baseline scorecard file or MLflow run id for the policy's regression rules.")
@click.option("--mlflow-uri", default=None, help="Tracking URI for an MLflow baseline [default: $MLFLOW_TRACKING_URI].")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Signer's trusted public key: show whether the signature is valid and from this key.")
@click.option("--signature", "signature_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Detached signature file [default: SCORECARD.sig when present].")
def report(scorecard: Path, output: Path | None, policy: Path | None, baseline: str | None, mlflow_uri: str | None, public_key: Path | None, signature_path: Path | None) -> None:
    """Render SCORECARD as one self-contained HTML report (inline CSS and SVG, no network)."""
    from ..report import write_report
    from ..scorecard import Scorecard
    from ..signing import verify_scorecard

    card = Scorecard.read(scorecard)
    out = output or scorecard.with_name("report.html")
    _check_report_path(out, scorecard)
    gate = None
    if policy is not None:
        from ..pipelines.gate import Trust, gate_report

        gate = gate_report(card, policy, baseline=baseline, mlflow_uri=mlflow_uri, scorecard_path=scorecard, trust=Trust(public_key, (), signature_path))
    verification = None
    if card.signature or signature_path or public_key or scorecard.with_name(scorecard.name + ".sig").is_file():
        verification = verify_scorecard(scorecard, public_key=public_key, signature_path=signature_path)
    warnings: list[str] = []
    try:  # what no run writes: an auditor reading the report must be told before reading any number
        card.validate_numbers()
    except ValueError as exc:
        warnings.append(f"the numbers in this scorecard contradict each other ({' '.join(str(exc).split())[:300]}): it was edited after the run "
                        "or written by another tool; do not rely on its numbers")
        click.echo(f"warning: {warnings[-1]}", err=True)
    if baseline:
        from ..gates.compare import mismatch_warning, setting_mismatches

        mism = setting_mismatches(_load(baseline, mlflow_uri), card)
        if mism:
            warnings.append("baseline and this run: " + mismatch_warning(mism))
            click.echo(f"warning: {warnings[-1]}", err=True)
    write_report(card, out, gate=gate, verification=verification, warnings=warnings)
    click.echo(str(out))


@click.command("gate")
@click.argument("scorecard", type=_SCORECARD)
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Gate policy YAML (see reports/example-policy.yaml).")
@click.option("--baseline", default=None, help="Baseline scorecard file or MLflow run id (runs:/ID) for non-regression rules.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write JUnit XML here (one test case per rule).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the markdown summary here (it is always printed, and appended to $GITHUB_STEP_SUMMARY when set).")
@click.option("--mlflow-uri", default=None, help="Tracking URI for an MLflow baseline [default: $MLFLOW_TRACKING_URI].")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A trusted signer's public key, for a policy with 'signature: required'.")
@click.option("--trusted-keys", "trusted_keys", multiple=True, type=click.Path(path_type=Path), help="Trusted public keys (.pem files or folders), for a policy with 'signature: required' [also: $ROBUSTLAB_TRUSTED_KEYS].")
@click.option("--signature", "signature_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SCORECARD's detached signature [default: SCORECARD.sig when it embeds none].")
@click.pass_context
def gate(ctx: click.Context, scorecard: Path, policy: Path, baseline: str | None, junit: Path | None, markdown_path: Path | None, mlflow_uri: str | None,
         public_key: Path | None, trusted_keys: tuple[Path, ...], signature_path: Path | None) -> None:
    """Apply a release-gate POLICY to SCORECARD.

    Exit codes: 0 every rule passed, 1 a rule failed (or, under 'signature: required', the scorecard
    or baseline is not signed by a trusted key), 2 usage or input error (bad policy, missing file, a
    signature that does not match its scorecard), 3 inconclusive (too few samples, no interval or
    baseline, audit suspect when the policy says so).
    """
    from ..errors import RobustlabError
    from ..pipelines.gate import Trust, apply_gate
    from ..scorecard import Scorecard
    from ..signing import broken_signature

    card = Scorecard.read(scorecard)
    why = broken_signature(scorecard)
    if why:
        raise RobustlabError(f"{scorecard} carries a signature that does not match it ({why.rstrip('.')}); gate the scorecard as it was signed, or re-sign it.")
    trust = Trust(public_key, tuple(trusted_keys), signature_path)
    if public_key or trusted_keys:
        trust.keys()  # a key file that is missing or no key is an input error even when the policy needs none
    outcome = apply_gate(card, policy, baseline=baseline, mlflow_uri=mlflow_uri, junit=junit, markdown_path=markdown_path,
                         scorecard_path=scorecard, trust=trust)
    click.echo(outcome.markdown)
    ctx.exit(outcome.exit_code)


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--min-delta", type=number(), default=0.0, show_default=True, help="Show metrics whose absolute change exceeds this.")
@click.option("--markdown", is_flag=True, help="Print markdown instead of plain text.")
@click.option("--mlflow-uri", default=None, help="Tracking URI when A or B is an MLflow run id.")
@click.option("--allow-mismatch", "--allow-protocol-mismatch", "allow_mismatch", is_flag=True,
              help="Compare even when A and B were made with different precision, compile, channels-last or corruption protocol (printed first as a warning).")
def compare(a: str, b: str, min_delta: float, markdown: bool, mlflow_uri: str | None, allow_mismatch: bool) -> None:
    """Show what moved from scorecard A to scorecard B (files or MLflow run ids).

    Refuses (exit 2) when A and B were made with different settings that change the numbers
    (precision, compile, channels-last, the corruption protocol) unless --allow-mismatch is given.
    """
    from ..errors import RobustlabError
    from ..gates.compare import compare_scorecards, format_comparison, mismatch_warning
    from ..gates.protocols import protocol_mismatches

    if not math.isfinite(min_delta) or min_delta < 0:
        raise RobustlabError(f"--min-delta must be a finite number >= 0, got {min_delta}; pass e.g. --min-delta 0.01.")
    card_a, card_b = _load(a, mlflow_uri), _load(b, mlflow_uri)
    protocols = protocol_mismatches(card_a, card_b)
    cmp = compare_scorecards(card_a, card_b)
    if (cmp.settings or protocols) and not allow_mismatch:
        parts = ([mismatch_warning(cmp.settings)] if cmp.settings else []) + (
            [f"protocols differ ({'; '.join(protocols)}): their numbers are not comparable."] if protocols else [])
        raise RobustlabError(f"not comparing: {' '.join(parts)} Re-run one of them with the other's settings, or pass --allow-mismatch.")
    if protocols:
        click.echo(("**Protocols differ; those checks' numbers are not comparable:** " if markdown else "WARNING protocols differ; those checks' numbers are not comparable: ") + "; ".join(protocols) + "\n")
    click.echo(format_comparison(cmp, min_abs=min_delta, markdown=markdown), nl=False)


@click.command("sign")
@click.argument("scorecard", type=_SCORECARD, required=False)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Ed25519 private key (PEM); encrypted keys read $ROBUSTLAB_KEY_PASSPHRASE.")
@click.option("--generate-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Create a new key pair here (private PEM, mode 0600, and .pub.pem) first.")
@click.option("--detached", is_flag=True, help="Write SCORECARD.sig instead of embedding the signature.")
def sign(scorecard: Path | None, key: Path | None, generate_key: Path | None, detached: bool) -> None:
    """Sign SCORECARD with Ed25519 (over the canonical JSON of everything but its signature)."""
    from ..errors import RobustlabError
    from ..signing import generate_key as gen
    from ..signing import read_scorecard_for_signing, sign_scorecard

    if scorecard is not None and generate_key is not None:
        read_scorecard_for_signing(scorecard)  # a bad scorecard is refused before a key pair is written
    if generate_key is not None:
        priv, pub = gen(generate_key)
        click.echo(f"private key {priv} (keep secret), public key {pub} (give to verifiers)")
        key = key or priv
    if scorecard is None:
        if generate_key is None:
            raise RobustlabError("nothing to do: pass a SCORECARD to sign, or --generate-key PATH.")
        return
    if key is None:
        raise RobustlabError("pass --key PRIVATE.pem (or --generate-key PATH to create one).")
    out = sign_scorecard(scorecard, key, detached=detached)
    click.echo(f"signed {scorecard} -> {out}")


@click.command("verify")
@click.argument("scorecard", type=_SCORECARD)
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Signer's trusted public key (PEM).")
@click.option("--trusted-keys", multiple=True, type=click.Path(path_type=Path), help="Trust store: a .pem public key or a folder of them (repeatable; also $ROBUSTLAB_TRUSTED_KEYS).")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A signed baseline scorecard whose signer you trust: its key is trusted.")
@click.option("--signature", "signature_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Detached signature [default: SCORECARD.sig when the scorecard has none embedded].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Model file: check its sha256 against the scorecard's.")
@click.option("--require-trusted", is_flag=True, hidden=True, help="Kept for old scripts: a trusted key is always required now.")
@click.pass_context
def verify(ctx: click.Context, scorecard: Path, public_key: Path | None, trusted_keys: tuple[Path, ...], baseline: Path | None,
           signature_path: Path | None, model_path: Path | None, require_trusted: bool) -> None:
    """Verify SCORECARD's signature against a trusted key (and, with --model, the model file).

    Exit codes: 0 intact and signed by a trusted key (--public-key, --trusted-keys,
    $ROBUSTLAB_TRUSTED_KEYS or the signer of --baseline); 1 not verified: unsigned, modified,
    signed by an untrusted key (anyone can re-sign an edited scorecard), or the model does not
    match; 2 the scorecard cannot be read (duplicate keys, NaN, invalid UTF-8, bad path).
    """
    from ..signing import verify_scorecard

    v = verify_scorecard(scorecard, public_key=public_key, signature_path=signature_path, model_path=model_path,
                         trusted_keys=trusted_keys, baseline=baseline)
    for m in v.messages:
        click.echo(m)
    click.echo(f"{'VERIFIED' if v.ok else 'NOT VERIFIED'}: {v.state.value}" + ("" if v.model_check is None else f", model {'matches' if v.model_check else 'does not match'}"))
    ctx.exit(0 if v.ok else 1)
