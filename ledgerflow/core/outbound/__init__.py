"""The outbound HTTP toolkit every service uses for APIs it calls (ERPs, source APIs, token endpoints).

* :mod:`~ledgerflow.core.outbound.transport`: the workers' shared ``httpx.AsyncClient``
  (aiohttp's connection pool, tracing);
* :mod:`~ledgerflow.core.outbound.client`: a per-API client with a rate limit, a concurrency
  cap, error tables (status and vendor codes → retriable or permanent), ``Retry-After`` parsing
  (delta-seconds or an HTTP-date; NaN, infinite and naive dates handled) and Decimal-exact JSON;
* :mod:`~ledgerflow.core.outbound.oauth`: OAuth 2.0 token managers (refresh-token rotation
  persisted in the state store, client credentials);
* :mod:`~ledgerflow.core.outbound.errors`: :class:`RetriableError` / :class:`PermanentError`.
"""
