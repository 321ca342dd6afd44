"""The auditor web UI: server-rendered pages (no JavaScript, no CDN, no external fonts) over the
service's storage, authorised by the signed-in token's role and project.

Pages: ``/`` (projects), ``/ui/projects/P`` (models, recent jobs), ``/ui/projects/P/models/M``
(versions, evaluations, headline metrics across versions with intervals, compare form),
``/ui/evaluations/ID`` (signature status verified against the trust store, gate decision and
policy, provenance, the stored report in a sandboxed frame, the evidence bundle),
``/ui/compare?a=ID&b=ID`` (``robustlab compare`` rendered, exact McNemar on per-sample flags),
``/ui/projects/P/submit`` (submitter role; CSRF-protected), ``/ui/jobs/ID`` (progress) and
``/ui/admin`` (admin role: projects, tokens, trust store, workers and queue; see :mod:`.admin`).
"""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """Mount the UI routes on ``app`` (called by :func:`robustlab.service.app.create_app`)."""
    from .admin import router as admin_router
    from .pages import router as pages_router
    from .submit import router as submit_router

    app.include_router(pages_router)
    app.include_router(submit_router)
    app.include_router(admin_router)


__all__ = ["install"]
