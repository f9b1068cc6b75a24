"""RFC 9457 ``application/problem+json`` answers for requests the ingress refuses."""

from __future__ import annotations

import orjson
from starlette.responses import Response

__all__ = ["PROBLEM_TYPE_BASE", "Problem", "problem_response"]

PROBLEM_TYPE_BASE = "https://ledgerflow.dev/problems/"


class Problem(Exception):  # noqa: N818 - named after the RFC's "problem details"
    """A refused request: HTTP ``status``, a short ``title``, the precise ``detail`` and a type slug.

    ``outcome`` is the label used in ``ledgerflow_webhooks_received_total``.
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        outcome: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.outcome = outcome
        self.headers = headers or {}


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    """Render ``problem`` as an ``application/problem+json`` response with its headers."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        body["instance"] = instance
    return Response(
        orjson.dumps(body),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=problem.headers,
    )
