"""RFC 9457 ``application/problem+json``: the one error shape of every ledgerflow HTTP edge.

Used by the ingress (refused webhooks) and the audit service (sync-records API and console).
:class:`Problem` is raised by a handler; :func:`problem_response` renders it; :func:`problem_doc`
describes the shape in an OpenAPI ``responses`` entry; :data:`PROBLEM_SCHEMA` is its JSON Schema.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["PROBLEM_SCHEMA", "PROBLEM_TYPE_BASE", "Problem", "problem_doc", "problem_response"]

PROBLEM_TYPE_BASE = "https://ledgerflow.dev/problems/"
"""Prefix of every problem ``type`` URI; the slug names the problem (``unknown-tenant``, ``forbidden``…)."""

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "URI naming the problem type."},
        "title": {"type": "string", "description": "Short summary of the problem type."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request, precisely."},
        "instance": {"type": "string", "description": "The request path."},
    },
}
"""JSON Schema of a problem document (RFC 9457 section 3)."""


class Problem(Exception):  # noqa: N818 - named after the RFC's "problem details"
    """A refused request: HTTP ``status``, a short ``title``, the precise ``detail`` and a type slug.

    ``outcome`` is a metric label of the raising service (the ingress counts webhooks by it);
    ``headers`` are sent with the answer (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        outcome: str = "error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.outcome = outcome
        self.headers = headers or {}

    def to_dict(self, instance: str | None = None) -> dict[str, object]:
        """The problem document (``type``, ``title``, ``status``, ``detail`` and ``instance`` when given)."""
        body: dict[str, object] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        return body


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    """Render ``problem`` as an ``application/problem+json`` response with its headers."""
    return Response(
        orjson.dumps(problem.to_dict(instance)),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=problem.headers,
    )


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry: ``description`` with an ``application/problem+json`` body."""
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}
