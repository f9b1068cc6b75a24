"""Masking of bank numbers and secrets in what the sync-records API returns.

Rule: any value that looks like a bank account or routing number, an IBAN, or a token keeps only
its last four characters (``****6789``). Two detectors:

* **by key** — a JSON member whose name says what it holds (``account_number``, ``routing_number``,
  ``iban``, ``sort_code``, ``token``, ``secret``, ``password``, ``authorization``, ``api_key``…)
  is masked whatever its value (names ending in ``_last4`` hold the last four already);
* **by shape** — inside any string: runs of 8–34 digits (spaces allowed between groups:
  US routing numbers are 9 digits, account numbers up to 17, IBAN bodies up to 30), IBANs,
  ``Bearer``/``Basic`` credentials, JWTs, and opaque keys (32+ base64/hex characters with both
  letters and digits).

Shorter numbers (amounts, ERP record ids, HTTP statuses, vendor error codes) stay readable;
UUID-style ids (hyphenated 8-4-4-4-12 groups) are not taken for tokens.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["mask_text", "mask_tree", "mask_value"]

_SENSITIVE_KEY = re.compile(
    r"(account.?(number|no|num)|acct.?(number|no|num)|routing|iban|sort.?code|bsb|"
    r"token|secret|password|passwd|authorization|api.?key|private.?key|signature)",
    re.IGNORECASE,
)
_LAST4_KEY = re.compile(r"last.?4$|last.?four$", re.IGNORECASE)

_PATTERNS = (
    # Authorization header values: keep the scheme, mask the credential.
    re.compile(r"(?i)\b(?P<keep>bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]{4,})"),
    # JSON Web Tokens.
    re.compile(r"(?P<secret>\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"),
    # IBAN: country, check digits, 11-30 alphanumerics (optionally grouped by 4).
    re.compile(r"(?P<secret>\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b)"),
    # Opaque keys: 32+ base64/hex chars with letters and digits (no hyphen: UUIDs stay readable).
    re.compile(
        r"(?P<secret>(?<![A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=]*\d)(?=[A-Za-z0-9_+/=]*[A-Za-z])[A-Za-z0-9_+/=]{32,})"
    ),
    # Account and routing numbers: 8-34 digits, possibly grouped with spaces (not dashes: dates).
    re.compile(r"(?P<secret>(?<![\w.])\d(?:[ ]?\d){7,33}(?![\w.]))"),
)


def mask_value(value: str) -> str:
    """``"123456789"`` → ``"****6789"``: keep the last four characters (values of four or fewer stay)."""
    compact = value.strip()
    if len(compact) <= 4:
        return compact
    return "****" + compact[-4:]


def mask_text(text: str) -> str:
    """Mask every bank number, IBAN or token found inside free text (error messages, ERP responses)."""
    for pattern in _PATTERNS:

        def repl(match: re.Match[str]) -> str:
            keep = match.groupdict().get("keep")
            secret = mask_value(match.group("secret").replace(" ", ""))
            return f"{keep} {secret}" if keep else secret

        text = pattern.sub(repl, text)
    return text


def mask_tree(value: Any, *, key: str | None = None) -> Any:
    """Mask a JSON-like tree (dicts, lists, strings, numbers): sensitive members by name, the rest by shape.

    Returns a new tree; the input is not modified. Numbers under a sensitive name are masked as strings.
    """
    sensitive = key is not None and bool(_SENSITIVE_KEY.search(key)) and not _LAST4_KEY.search(key)
    if isinstance(value, dict):
        return {k: mask_tree(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v, key=key) for v in value]
    if isinstance(value, str):
        return mask_value(value) if sensitive else mask_text(value)
    if sensitive and isinstance(value, int) and not isinstance(value, bool):
        return mask_value(str(value))
    return value
