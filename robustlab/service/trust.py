"""The service's trust store: the service key plus the keys admins add (table ``trusted_keys``).
Verification itself is :func:`robustlab.signing.verify_dict`; nothing is re-implemented here."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import RobustlabError
from ..signing import Verification, key_id, load_public_key, verify_dict
from .models import TrustedKey
from .settings import Settings


def public_key_from_pem(pem: str) -> bytes:
    """Raw Ed25519 public key from PEM text (422 via :class:`RobustlabError` otherwise)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pub = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise RobustlabError("not a PEM public key; send the signer's .pub.pem file") from exc
    if not isinstance(pub, Ed25519PublicKey):
        raise RobustlabError("not an Ed25519 public key; robustlab signs with Ed25519")
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def service_public_key(settings: Settings) -> bytes:
    return load_public_key(settings.key_path.with_name(settings.key_path.stem + ".pub.pem"))


def ensure_service_key_trusted(s: Session, settings: Settings) -> None:
    raw = service_public_key(settings)
    kid = key_id(raw)
    if s.scalar(select(TrustedKey).where(TrustedKey.key_id == kid)) is None:
        s.add(TrustedKey(key_id=kid, public_key=base64.b64encode(raw).decode(), name="service"))


def remove_key(s: Session, settings: Settings, kid: str) -> None:
    """Take ``kid`` out of the trust store (404 if absent); the service's own key cannot be removed."""
    from .auth import AuthError

    row = s.scalar(select(TrustedKey).where(TrustedKey.key_id == kid))
    if row is None:
        raise AuthError(404, "no such trusted key")
    if kid == key_id(service_public_key(settings)):
        raise AuthError(409, "the service's own key stays trusted: every job's scorecard is signed with it")
    s.delete(row)
    refresh_signatures(s, settings, kid)


def refresh_signatures(s: Session, settings: Settings, kid: str) -> int:
    """Re-verify every stored scorecard signed by ``kid`` against the trust store as it is now (after
    the key was added or removed), so the API, the pages and the model views never show a status
    the store no longer supports. Returns how many changed."""
    from ..errors import RobustlabError
    from .artifacts import BadKey
    from .auth import AuthError
    from .models import StoredScorecard
    from .ui.data import verify_now

    s.flush()
    changed = 0
    for card in s.scalars(select(StoredScorecard).where(StoredScorecard.signature_key_id == kid)):
        try:
            v = verify_now(s, settings.artifact_dir, card)
        except (RobustlabError, OSError, BadKey, ValueError, AuthError):  # an unreadable stored file: it can no longer be vouched for
            state, message = "invalid", "the stored scorecard could not be read to re-verify it after a trust store change"
        else:
            state, message = v.state.value, "; ".join(v.messages)[:2000]
        if (card.signature_state, card.signature_message) != (state, message):
            card.signature_state, card.signature_message = state, message
            changed += 1
    return changed


def trusted_keys(s: Session) -> list[bytes]:
    return [base64.b64decode(k.public_key) for k in s.scalars(select(TrustedKey))]


def verify_card(s: Session, card: dict[str, Any], signature: dict[str, Any] | None = None) -> Verification:
    """Verify a scorecard dict against the trust store."""
    keys = trusted_keys(s)
    v = verify_dict(card, signature=signature, trusted_keys=keys)
    if v.state.value == "invalid" and keys:
        # verify_dict calls an intact signature by a key outside the store 'invalid' (not the
        # trusted key); the service shows it as untrusted, which is what it is.
        alone = verify_dict(card, signature=signature)
        if alone.state.value == "valid-untrusted":
            return alone
    return v
