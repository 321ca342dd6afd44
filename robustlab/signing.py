"""Ed25519 signatures over scorecards.

The signed message is the *canonical JSON* of the scorecard without its ``signature`` field:
``json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
encoded as UTF-8, computed from the JSON file as written (never from a re-serialised object), so
any change to any number, key or provenance field invalidates the signature. The scorecard records
the model file's sha256, the data set and the suite, so a verified scorecard proves which model,
data and suite produced it; ``verify --model FILE`` also re-hashes the model file.

The signature is stored either in the scorecard's ``signature`` field (embedded) or in a detached
JSON file (``scorecard.json.sig``), with the same content::

    {"algorithm": "ed25519", "format": 2, "public_key": <base64 raw 32 bytes>, "key_id": <sha256 of the
     raw key, first 16 hex>, "signed_at": <UTC ISO time>, "payload_sha256": <hex>, "value": <base64 64 bytes>}

``value`` signs the canonical JSON of ``{"algorithm", "format", "key_id", "payload_sha256",
"signed_at"}``, so the signing time and the payload hash are covered too; ``payload_sha256`` is the
sha256 of the canonical scorecard bytes and is recomputed by the verifier. Scorecards are read
strictly (:func:`robustlab.scorecard.loads_strict`): duplicate keys, NaN/Infinity and lone surrogates
are refused, so the canonical form is unambiguous.

A signature is only *verified* when its key is trusted: a key passed with ``--public-key``, a key in
the trust store (``--trusted-keys`` or ``$ROBUSTLAB_TRUSTED_KEYS``: ``.pem`` files or folders of
them, separated by ``os.pathsep``), or the key that signed a baseline scorecard named with
``--baseline``. An intact signature by any other key is ``valid-untrusted``, which ``verify`` does
not pass (exit 1): anyone can re-sign an edited scorecard with a key of their own.

References: RFC 8032 (Ed25519), via ``cryptography.hazmat.primitives.asymmetric.ed25519``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import RobustlabError, path_problem
from .scorecard import atomic_write_text

ALGORITHM = "ed25519"
PASSPHRASE_ENV = "ROBUSTLAB_KEY_PASSPHRASE"
TRUST_ENV = "ROBUSTLAB_TRUSTED_KEYS"
FORMAT = 2


class SignatureState(str, Enum):
    """Verification state of a scorecard, as shown in the report."""

    UNSIGNED = "unsigned"
    VALID_TRUSTED = "valid-trusted"  # valid and made by the trusted key the verifier supplied
    VALID_UNTRUSTED = "valid-untrusted"  # intact, but signed by a key nobody vouched for: not verified
    INVALID = "invalid"  # signature does not match the content (tampered) or the trusted key


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_scorecard`.

    Attributes:
        state: the signature state.
        key_id: fingerprint of the key that signed (``None`` when unsigned).
        signed_at: signing time recorded in the signature.
        model_check: ``None`` (not requested), ``True`` (model file hash matches), ``False``.
        messages: plain-language explanations, one per finding.
    """

    state: SignatureState
    key_id: str | None = None
    signed_at: str | None = None
    model_check: bool | None = None
    messages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state is SignatureState.VALID_TRUSTED and self.model_check is not False


def canonical_bytes(card: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of a scorecard dict, excluding its ``signature`` field."""
    body = {k: v for k, v in card.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _passphrase() -> bytes | None:
    v = os.environ.get(PASSPHRASE_ENV)
    return v.encode() if v else None


def generate_key(path: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (PEM, PKCS8, mode 0600; encrypted when ``$ROBUSTLAB_KEY_PASSPHRASE``
    is set) to ``path`` and its public key to ``<path stem>.pub.pem``. Returns both paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv_path = Path(path)
    pub_path = priv_path.with_name(priv_path.stem + ".pub.pem")
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise RobustlabError(f"{priv_path} or {pub_path} already exists; choose another path or delete the old key first.")
    key = Ed25519PrivateKey.generate()
    pw = _passphrase()
    enc: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path.write_bytes(pub)
    return priv_path, pub_path


def _load_private(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise RobustlabError(f"signing key {p} {path_problem(p)}; pass the private key's .pem file.")
        raise RobustlabError(f"signing key {p} does not exist; create one with `robustlab sign --generate-key {p}`.")
    data = p.read_bytes()
    if b"-----BEGIN PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise RobustlabError(f"{p} is a public key, which verifies but cannot sign; pass the private key (the .pem that "
                             "`robustlab sign --generate-key` wrote beside the .pub.pem).")
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase())
    except (ValueError, TypeError) as exc:
        raise RobustlabError(f"cannot read Ed25519 private key {p} ({exc}); set ${PASSPHRASE_ENV} if it is encrypted.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RobustlabError(f"{p} is not an Ed25519 key; create one with `robustlab sign --generate-key`.")
    return key


def load_public_key(path: str | Path) -> bytes:
    """Raw 32-byte Ed25519 public key from a PEM public key (or a PEM private key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(path)
    if not p.is_file():
        raise RobustlabError(f"public key {p} {path_problem(p)}; pass the signer's .pub.pem file.")
    data = p.read_bytes()
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError as exc:
        if b"PRIVATE KEY-----" not in data:  # neither a public nor a private key: say it as a public key
            raise RobustlabError(f"cannot read Ed25519 public key {p} ({' '.join(str(exc).split())[:160]}); pass the signer's .pub.pem file.") from exc
        pub = _load_private(p).public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise RobustlabError(f"{p} is not an Ed25519 public key.")
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_json(path: Path) -> dict[str, Any]:
    from .scorecard import read_strict_json

    d = read_strict_json(path)
    if not isinstance(d, dict):
        raise RobustlabError(f"{path} is not a robustlab scorecard (expected a JSON object).")
    return d


def _read_signature(path: Path) -> dict[str, Any]:
    """A detached signature file (``SCORECARD.sig``), named as such in its errors."""
    from .scorecard import read_strict_json

    fix = "pass the .sig file that `robustlab sign --detached` wrote beside the scorecard"
    d = read_strict_json(path, what="robustlab detached signature", fix=fix)
    if not isinstance(d, dict):
        raise RobustlabError(f"{path} is not a robustlab detached signature (expected a JSON object); {fix}.")
    return d


def read_scorecard_for_signing(path: str | Path) -> None:
    """Raise the one-line ``RobustlabError`` that :func:`sign_scorecard` would, before anything is written."""
    _read_card(Path(path))


def _read_card(path: Path) -> dict[str, Any]:
    """A scorecard file, read strictly and checked field by field (``RobustlabError`` otherwise)."""
    from .scorecard import Scorecard

    d = _read_json(path)
    try:
        Scorecard.from_dict(d).validate()
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise RobustlabError(f"{path} is not a valid robustlab scorecard ({' '.join(str(exc).split())[:200]}); regenerate it with `robustlab evaluate`.") from exc
    return d


def _header(sig: dict[str, Any]) -> bytes:
    """The bytes the signature value signs: every field of the block but the key and the value."""
    head = {k: sig.get(k) for k in ("algorithm", "format", "key_id", "payload_sha256", "signed_at")}
    return json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


#: every field of a signature block (format 2); any other field is unsigned and refused by the verifier
SIGNATURE_FIELDS = frozenset({"algorithm", "format", "public_key", "key_id", "signed_at", "payload_sha256", "value"})


def make_signature(card: dict[str, Any], key_path: str | Path) -> dict[str, Any]:
    """The signature block for a scorecard dict, signed with the private key at ``key_path``."""
    from cryptography.hazmat.primitives import serialization

    key = _load_private(key_path)
    msg = canonical_bytes(card)
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "format": FORMAT,
        "public_key": base64.b64encode(raw_pub).decode(),
        "key_id": key_id(raw_pub),
        "signed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "payload_sha256": hashlib.sha256(msg).hexdigest(),
    }
    sig["value"] = base64.b64encode(key.sign(_header(sig))).decode()
    return sig


def sign_scorecard(path: str | Path, key_path: str | Path, *, detached: bool = False) -> Path:
    """Sign the scorecard file at ``path``; write the signature into it, or to ``<path>.sig``.

    Returns the file that now holds the signature.
    """
    p = Path(path)
    card = _read_card(p)
    sig = make_signature(card, key_path)
    if detached:
        return atomic_write_text(p.with_name(p.name + ".sig"), json.dumps(sig, indent=1) + "\n")
    card["signature"] = sig
    return atomic_write_text(p, json.dumps(card, indent=1, ensure_ascii=False, allow_nan=False))


def verify_dict(card: dict[str, Any], *, signature: dict[str, Any] | None = None, trusted_keys: "list[bytes] | tuple[bytes, ...]" = ()) -> Verification:
    """Verify a scorecard dict (embedded signature, or ``signature`` given separately) against the
    ``trusted_keys`` (raw Ed25519 public keys)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = signature if signature is not None else card.get("signature")
    if not sig:
        return Verification(SignatureState.UNSIGNED, messages=("the scorecard is not signed",))
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
        return Verification(SignatureState.INVALID, messages=(f"unsupported signature block (expected algorithm {ALGORITHM!r})",))
    if sig.get("format") != FORMAT:
        return Verification(SignatureState.INVALID, messages=(f"signature format {sig.get('format')!r} is not {FORMAT} (it does not cover the signing time); re-sign the scorecard",))
    if not all(isinstance(sig.get(k), str) for k in ("public_key", "value", "key_id", "signed_at", "payload_sha256")):
        return Verification(SignatureState.INVALID, messages=("malformed signature block (a field is missing or not a string)",))
    extra = sorted(set(sig) - SIGNATURE_FIELDS)
    if extra:  # nothing signs them: a reader could take them for signed statements
        return Verification(SignatureState.INVALID, messages=(f"the signature block holds fields no signature covers ({', '.join(map(ascii, extra[:5]))}); "
                                                              "re-sign the scorecard",))
    try:
        raw_pub = base64.b64decode(sig["public_key"], validate=True)
        value = base64.b64decode(sig["value"], validate=True)
        pub = Ed25519PublicKey.from_public_bytes(raw_pub)
    except (KeyError, ValueError, TypeError) as exc:
        return Verification(SignatureState.INVALID, messages=(f"malformed signature block ({exc})",))
    kid = key_id(raw_pub)
    at = str(sig["signed_at"])
    if sig["key_id"] != kid:
        return Verification(SignatureState.INVALID, kid, at, messages=(f"the signature block names key {sig['key_id']!r} but carries key {kid}",))
    try:
        pub.verify(value, _header(sig))
    except InvalidSignature:
        return Verification(SignatureState.INVALID, kid, at, messages=("signature does NOT match its block: the signing time, hash or key was modified after signing",))
    try:
        payload = hashlib.sha256(canonical_bytes(card)).hexdigest()
    except (ValueError, UnicodeEncodeError) as exc:
        return Verification(SignatureState.INVALID, kid, at, messages=(f"the scorecard cannot be put in canonical form ({exc})",))
    if payload != sig["payload_sha256"]:
        return Verification(SignatureState.INVALID, kid, at, messages=("signature does NOT match the content: the scorecard was modified after signing",))
    if not trusted_keys:
        return Verification(SignatureState.VALID_UNTRUSTED, kid, at, messages=(
            f"content intact, signed by key {kid}, which is not a trusted key: pass the signer's --public-key, "
            f"add it to the trust store (--trusted-keys or ${TRUST_ENV}) or name a --baseline it signed",))
    if raw_pub not in trusted_keys:
        names = ", ".join(key_id(k) for k in trusted_keys[:3])
        return Verification(SignatureState.INVALID, kid, at, messages=(f"signed by key {kid}, which is NOT the trusted key {names}",))
    return Verification(SignatureState.VALID_TRUSTED, kid, at, messages=(f"content intact and signed by the trusted key {kid}",))


def broken_signature(path: str | Path) -> str | None:
    """Why the signature a scorecard file carries (embedded, or ``<path>.sig``) does not match it: content,
    hash, signing time or key changed after signing, or a malformed block. None when the file is unsigned,
    intact, or signed in an older format (whether the signer is trusted is ``robustlab verify``'s question).
    The gate refuses such a file: its numbers are not the ones that were signed."""
    p = Path(path)
    card = _read_json(p)
    sig: Any = card.get("signature")
    sp = p.with_name(p.name + ".sig")
    if not sig and sp.is_file():
        sig = _read_signature(sp)
    if not sig or (isinstance(sig, dict) and isinstance(sig.get("format"), int) and sig.get("format") != FORMAT):
        return None
    v = verify_dict(card, signature=sig if isinstance(sig, dict) else {"algorithm": None})
    return v.messages[0] if v.state is SignatureState.INVALID else None


def trust_store(paths: "list[str | Path] | tuple[str | Path, ...]" = (), *, use_env: bool = True) -> list[bytes]:
    """Raw public keys from ``.pem`` files or folders of them (``paths`` and ``$ROBUSTLAB_TRUSTED_KEYS``)."""
    items: list[Path] = [Path(p) for p in paths]
    if use_env and os.environ.get(TRUST_ENV):
        items += [Path(p) for p in os.environ[TRUST_ENV].split(os.pathsep) if p]
    keys: list[bytes] = []
    for item in items:
        if item.is_dir():
            files = sorted(item.glob("*.pem"))
        elif item.is_file():
            files = [item]
        else:
            raise RobustlabError(f"trusted key location {item} does not exist; fix --trusted-keys or ${TRUST_ENV}.")
        keys += [load_public_key(f) for f in files]
    return keys


def baseline_key(path: str | Path) -> bytes:
    """The key that signed the baseline scorecard at ``path`` (its signature must be intact)."""
    p = Path(path)
    card = _read_card(p)
    sig = card.get("signature")
    sp = p.with_name(p.name + ".sig")
    if not sig and sp.is_file():
        sig = _read_signature(sp)
    v = verify_dict(card, signature=sig if isinstance(sig, dict) else None)
    if v.state is not SignatureState.VALID_UNTRUSTED or not isinstance(sig, dict):
        raise RobustlabError(f"baseline {p} is not intact and signed ({v.state.value}: {v.messages[0]}); name a signed baseline or pass --public-key.")
    return base64.b64decode(sig["public_key"])


def verify_file(path: str | Path, *, trusted_keys: "list[bytes] | tuple[bytes, ...]", signature_path: str | Path | None = None) -> Verification:
    """Verify the scorecard file at ``path`` against raw ``trusted_keys``: its embedded signature, or the
    detached one (``signature_path``, else ``<path>.sig`` when the scorecard embeds none)."""
    p = Path(path)
    card = _read_card(p)
    sig: dict[str, Any] | None = None
    sp = Path(signature_path) if signature_path else p.with_name(p.name + ".sig")
    if signature_path or (not card.get("signature") and sp.is_file()):
        sig = _read_signature(sp)
    return verify_dict(card, signature=sig, trusted_keys=trusted_keys)


def verify_scorecard(
    path: str | Path,
    *,
    public_key: str | Path | None = None,
    signature_path: str | Path | None = None,
    model_path: str | Path | None = None,
    trusted_keys: "list[str | Path] | tuple[str | Path, ...]" = (),
    baseline: str | Path | None = None,
    use_env: bool = True,
) -> Verification:
    """Verify the scorecard file at ``path`` and, with ``model_path``, the model file's sha256.

    A detached signature is used when ``signature_path`` is given or ``<path>.sig`` exists and the
    scorecard has no embedded signature. Trusted keys: ``public_key``, ``trusted_keys`` (files or
    folders), ``$ROBUSTLAB_TRUSTED_KEYS`` (with ``use_env``) and the signer of ``baseline``.
    """
    trusted = ([load_public_key(public_key)] if public_key else []) + trust_store(trusted_keys, use_env=use_env)
    if baseline is not None:
        trusted.append(baseline_key(baseline))
    v = verify_file(path, trusted_keys=trusted, signature_path=signature_path)
    card = _read_card(Path(path))
    if model_path is None:
        return v
    mp = Path(model_path)
    if not mp.is_file():
        raise RobustlabError(f"model file {mp} does not exist; pass the model file the scorecard was produced from.")
    expected = (card.get("model") or {}).get("sha256")
    actual = sha256_file(mp)
    if not expected:
        return Verification(v.state, v.key_id, v.signed_at, False, v.messages + ("the scorecard records no model sha256, so the model cannot be checked",))
    match = actual == str(expected).lower()
    msg = f"model file {mp.name} sha256 {actual[:16]}… {'matches' if match else 'does NOT match'} the scorecard's {str(expected)[:16]}…"
    return Verification(v.state, v.key_id, v.signed_at, match, v.messages + (msg,))
