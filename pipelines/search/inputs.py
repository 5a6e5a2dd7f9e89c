"""What a search request may ask: its query string, query, k, clip names and byte range,
each checked, with the HTTP error a bad one gets.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from resources.storage import checked_name

MAX_QUERY_CHARS = 500  # a sentence or two; the text tower truncates far sooner
MAX_QUERY_STRING_BYTES = 8192
DEFAULT_K = 10
MAX_K = 100  # a page of hits; more is a bulk export, not a search


class SearchError(Exception):
    """A request the service cannot answer, with the HTTP status and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Unsatisfiable(Exception):
    """A byte range that starts past the end of the clip."""


# --- request checks: one place, shared by the pages, the API and the CLI ----------------------


def query_params(raw: bytes) -> dict[str, str]:
    """The query string's parameters (the first of each name), percent-decoded as strict UTF-8
    (urllib.parse.parse_qs): a query that is not text is refused rather than searched as
    replacement characters."""
    if len(raw) > MAX_QUERY_STRING_BYTES:
        raise SearchError(
            400, f"the query string is {len(raw)} bytes; at most {MAX_QUERY_STRING_BYTES}"
        )
    try:
        parsed = parse_qs(
            raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise SearchError(
            400, "the query string is not valid UTF-8 text: send the query percent-encoded as UTF-8"
        ) from None
    return {name: values[0] for name, values in parsed.items()}


def checked_query(text: str | None) -> str:
    """The query with its whitespace collapsed, or SearchError(400) if it is empty or long."""
    text = " ".join((text or "").split())
    if not text:
        raise SearchError(
            400,
            'empty query: describe the clip you are looking for, e.g. "a red circle moves left"',
        )
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(
            400, f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS}"
        )
    return text


def checked_k(value: str | int | None) -> int:
    """k as a whole number from 1 to MAX_K (DEFAULT_K when not given)."""
    if value is None or value == "":
        return DEFAULT_K
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= MAX_K:
        raise SearchError(400, f"k must be a whole number from 1 to {MAX_K}, not {value!r}")
    return int(text)


def checked_clip_name(name: str, what: str) -> str:
    try:
        return checked_name(name, what)
    except ValueError as e:
        raise SearchError(400, str(e)) from None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a `Range: bytes=...` header over `size` bytes; None to
    send the whole clip (no header, or one this server ignores as RFC 9110 allows: another
    unit, several ranges, bad syntax). Unsatisfiable if the range starts at or past the end."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    spec = spec.strip()
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = re.fullmatch(r"([0-9]*)-([0-9]*)", spec)
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(int(last), size - 1) if last else size - 1
