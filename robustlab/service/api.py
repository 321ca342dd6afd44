"""The JSON API, version 1: identity, projects, tokens, the trust store. Jobs, models and
scorecards are in :mod:`robustlab.service.jobs_api` (included here)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .auth import AuthError, Principal, authenticate, create_token, revoke
from .models import Project, Role, Token, TrustedKey

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def db_session(request: Request) -> Iterator[Session]:
    from .app import state_of

    with state_of(request).db.session() as s:
        yield s


def principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The caller: a Bearer token, else the UI session cookie (read-only pages)."""
    from .app import state_of

    if authorization is None and request.method == "GET":
        from .sessions import session_principal

        p = session_principal(request)
        if p is not None:
            return p
    with state_of(request).db.session() as s:
        return authenticate(s, authorization)


DB = Annotated[Session, Depends(db_session, scope="function")]  # committed before the answer is sent, not after
Caller = Annotated[Principal, Depends(principal)]
router = APIRouter()


class ProjectIn(BaseModel):
    name: str = Field(pattern=NAME)


class ProjectOut(BaseModel):
    id: int
    name: str


class TokenIn(BaseModel):
    name: str = Field(pattern=NAME)
    role: Role
    project: str | None = Field(default=None, pattern=NAME)


class TokenOut(BaseModel):
    id: int
    name: str
    role: Role
    project: str | None
    prefix: str
    revoked: bool
    token: str | None = None  # only in the answer that creates it


class KeyIn(BaseModel):
    name: str = Field(pattern=NAME)
    public_key_pem: str = Field(max_length=2000)


class KeyOut(BaseModel):
    key_id: str
    name: str


def project_by_name(s: Session, p: Principal, name: str) -> Project:
    """The project ``name`` if the caller may see it (404 otherwise, whether or not it exists)."""
    proj = s.scalar(select(Project).where(Project.name == name))
    if proj is None or not p.can_read(proj.id):
        raise AuthError(404, f"no project {name!r} visible to this token")
    return proj


@router.get("/whoami")
def whoami(p: Caller, s: DB) -> dict[str, object]:
    proj = s.get(Project, p.project_id) if p.project_id else None
    return {"name": p.name, "role": p.role.value, "project": proj.name if proj else None}


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(p: Caller, s: DB) -> list[ProjectOut]:
    q = select(Project).order_by(Project.name)
    if p.role is not Role.ADMIN:
        q = q.where(Project.id == p.project_id)
    return [ProjectOut(id=x.id, name=x.name) for x in s.scalars(q)]


@router.post("/projects", response_model=ProjectOut, status_code=201)
def create_project(body: ProjectIn, p: Caller, s: DB) -> ProjectOut:
    p.require(Role.ADMIN)
    if s.scalar(select(Project).where(Project.name == body.name)) is not None:
        raise AuthError(409, f"project {body.name!r} exists")
    proj = Project(name=body.name)
    s.add(proj)
    s.flush()
    return ProjectOut(id=proj.id, name=proj.name)


def _token_out(s: Session, t: Token, value: str | None = None) -> TokenOut:
    proj = s.get(Project, t.project_id) if t.project_id else None
    return TokenOut(id=t.id, name=t.name, role=t.role, project=proj.name if proj else None, prefix=t.prefix, revoked=t.revoked_at is not None, token=value)


@router.post("/tokens", response_model=TokenOut, status_code=201)
def new_token(body: TokenIn, p: Caller, s: DB) -> TokenOut:
    p.require(Role.ADMIN)
    if body.role is Role.ADMIN and body.project:
        raise AuthError(422, "an admin token belongs to no project (it reaches every project); leave out the project")
    proj = project_by_name(s, p, body.project) if body.project else None
    if body.role is not Role.ADMIN and proj is None:
        raise AuthError(422, "submitter and auditor tokens need a project")
    t, value = create_token(s, name=body.name, role=body.role, project=proj)
    return _token_out(s, t, value)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(p: Caller, s: DB) -> list[TokenOut]:
    p.require(Role.ADMIN)
    return [_token_out(s, t) for t in s.scalars(select(Token).order_by(Token.id))]


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(token_id: int, p: Caller, s: DB) -> None:
    p.require(Role.ADMIN)
    if not revoke(s, token_id):
        raise AuthError(404, "no such active token")


@router.get("/trusted-keys", response_model=list[KeyOut])
def list_keys(p: Caller, s: DB) -> list[KeyOut]:
    return [KeyOut(key_id=k.key_id, name=k.name) for k in s.scalars(select(TrustedKey).order_by(TrustedKey.id))]


@router.post("/trusted-keys", response_model=KeyOut, status_code=201)
def add_key(body: KeyIn, p: Caller, s: DB, request: Request) -> KeyOut:
    p.require(Role.ADMIN)
    from .trust import public_key_from_pem

    raw = public_key_from_pem(body.public_key_pem)
    from ..signing import key_id

    kid = key_id(raw)
    if s.scalar(select(TrustedKey).where(TrustedKey.key_id == kid)) is None:
        s.add(TrustedKey(key_id=kid, public_key=base64.b64encode(raw).decode(), name=body.name))
        try:
            s.flush()
        except IntegrityError as exc:
            raise AuthError(409, "key already trusted") from exc
        from .app import state_of
        from .trust import refresh_signatures

        refresh_signatures(s, state_of(request).settings, kid)  # its scorecards pushed before are trusted now
    return KeyOut(key_id=kid, name=body.name)


@router.delete("/trusted-keys/{kid}", status_code=204)
def remove_key(kid: str, p: Caller, s: DB, request: Request) -> None:
    p.require(Role.ADMIN)
    from .app import state_of
    from .trust import remove_key as remove

    remove(s, state_of(request).settings, kid)
