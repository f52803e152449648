"""Text sirenup did not write, made safe to show: file names, a weights file's metadata, a
server's messages, URLs. Standard library only (the CLI's start-up imports this).

- ``one_line``: control characters (escape sequences, a newline), line separators, lone
  surrogates and bidirectional overrides shown as escapes (``\\x1b``, ``\\n``, ``\\u202e``);
  emoji and accents stay as they are;
- ``shown``: ``one_line`` and cut to a length (10 KB of "name" is not a name);
- ``redact_url``: a URL without its user name and password, and with its query (tokens,
  signatures) replaced by ``?...``.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit, urlunsplit

MAX_SHOWN = 80  # characters of an untrusted name shown

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """``text`` with line breaks, other control characters and bidirectional overrides shown
    as escapes (``\\n``, ``\\u202e``): a file name or a server's message with a newline in it
    still gives one line, shown as it is (emoji and accents stay as they are)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(repr(char)[1:-1] if _hidden(char) else char for char in text)


def _hidden(char: str) -> bool:
    """Control characters, line/paragraph separators, lone surrogates (undecodable bytes of
    a file name) and bidi controls: what would break or disguise the line."""
    return unicodedata.category(char) in {"Cc", "Zl", "Zp", "Cs"} or char in _BIDI


def shown(text: object, limit: int = MAX_SHOWN) -> str:
    """Untrusted ``text`` (a weights file's name, a registry's field) as one safe line of at
    most ``limit`` characters (cut with '...')."""
    line = one_line(str(text))
    return line if len(line) <= limit else line[:max(limit - 3, 1)] + "..."


def redact_url(url: str) -> str:
    """``url`` without userinfo (``user:secret@``) and with any query shown as ``?...``:
    what messages, lists and reports show of a URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return one_line(url.split("?", 1)[0].rpartition("@")[2])
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if "@" not in parts.netloc:
        netloc = parts.netloc
    query = "..." if parts.query else ""
    return one_line(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
