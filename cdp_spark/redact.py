"""Redaction of secrets and personal values from every text the project writes (errors, logs, reports).

``redact`` masks the password of a URL (``postgresql://user:***@host``) and of a ``password=`` parameter,
the secret values it is given, e-mail addresses (``***@example.com``: the domain still helps) and
international phone numbers (``+*********67``). ``redact_value`` is for one value shown as an example.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:@/]*):[^\s@/]*@")
_PASSWORD_PARAMETER = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)=[^\s&;,]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_INTERNATIONAL_PHONE = re.compile(r"\+\d(?:[\s().-]?\d){6,}")
_PHONE_LIKE = re.compile(r"\+?[\d\s().-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL and parameter passwords, the given ``secrets``, e-mails and phone numbers masked."""
    # Longest first, so a secret containing a shorter one is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _PASSWORD_PARAMETER.sub(rf"\1={MASK}", text)
    text = _EMAIL.sub(rf"{MASK}@\1", text)
    return _INTERNATIONAL_PHONE.sub(lambda m: _mask_digits(m.group()), text)


def redact_value(value: object) -> str:
    """One value shown as an example (a key of a failing row): a phone-like value keeps its last 2 digits."""
    text = str(value)
    if _PHONE_LIKE.fullmatch(text) and sum(c.isdigit() for c in text) >= 7:
        return _mask_digits(text)
    return redact(text)


def _mask_digits(phone: str) -> str:
    """Every digit but the last two replaced by ``*``; separators and a leading ``+`` kept."""
    keep = len(phone)
    for _ in range(2):
        keep = max(i for i, c in enumerate(phone[:keep]) if c.isdigit())
    return re.sub(r"\d", "*", phone[:keep]) + phone[keep:]
