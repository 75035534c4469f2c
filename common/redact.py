"""Credentials out of text, before it reaches a log line, an error, a metric or a page.

:func:`redact_url` is the one redaction routine: every call site and the logging filter
(:class:`RedactingFilter`, installed on the root handlers by the ``vigil`` command) use it.

The userinfo rule. A URL starts at ``scheme://`` (the scheme taken whole). Its userinfo
ends at the *last* ``@`` that is followed by a host (a name or ``[IPv6]``, then a port,
path, query, fragment, space, quote, bracket, comma or the end) and that comes before the
end of the line and before the next URL that starts a new word (after a space, quote,
bracket, ``=``, ``,`` or ``;``). Everything between ``scheme://`` and that ``@`` becomes
``***``, so a password may hold raw ``@ : / # ? %`` and spaces. The next URL only bounds
the search when the text before it reads as a complete URL without userinfo
(``host[:port]`` then a path, a space or the end); otherwise that text may be the start of
a password that contains `` x://``, and the search runs on to the end of the line. Text
without ``scheme://`` (``/data/cam@1/clip.mp4``) and URLs without userinfo are unchanged;
a URL whose path holds a host-like ``@name/`` loses its host too, by design: when in doubt,
hide. ``file:///...`` (empty authority) never has userinfo.

Key/value secrets. Values of secret-looking keys (``password``, ``passwd``, ``pwd``,
``secret``, ``token``, ``api_key``, ``credentials``, ``auth``..., as whole keys or parts of
them, e.g. ``sasl_plain_password``, ``ssl_password``, ``sasl_oauth_token_provider``) become
``***`` in dict reprs and JSON (``'key': 'value'``), keyword arguments and query strings
(``key=value``) and header-like text (``key: value``, ``Authorization: Bearer ...``).
``None`` / ``null`` values stay, so "no password configured" still reads as such.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback

MASK = "***"

_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://"
_URL_START = re.compile(_SCHEME)
# A URL that starts a new word: the next one bounds the previous one's userinfo search.
_WORD_URL_START = re.compile(r"(?:(?<=[\s'\"`(<\[{=,;|>])|^)" + _SCHEME)
_HOST = r"(?:\[[0-9A-Fa-f:.]+(?:%[\w.~-]+)?\]|[A-Za-z0-9_~%](?:[A-Za-z0-9_.~%\-]*))"
_HOST_END = r"(?=[:/?#\s'\"`<>()\[\]{},;|]|$)"
# An '@' that can end userinfo: a host follows it.
_USERINFO_END = re.compile(r"@" + _HOST + _HOST_END)
# A complete URL's authority without userinfo: host[:port], then a path, a space or the end.
_PLAIN_AUTHORITY = re.compile(_HOST + r"(?::\d+)?(?=[/?#\s'\"`<>()\[\]{},;|]|$)")

_TOKEN_CHAR = r"[A-Za-z0-9_.\-]"
# A secret-looking key, taken whole: a lookahead finds the secret word inside the token,
# then the token is matched atomically (a lookahead plus a back-reference, Python 3.10's
# atomic group), so the engine never backtracks into it and a long token costs linear time.
_SECRET_KEY = (
    rf"(?=(?i:pass)(?!{_TOKEN_CHAR})|{_TOKEN_CHAR}*?(?i:password|passwd|passphrase|pwd|secret|token"
    r"|api[_\-]?key|access[_\-]?key|private[_\-]?key|credential|authorization|auth|cookie"
    r"|session[_\-]?id))"
    rf"(?=(?P<{{0}}>{_TOKEN_CHAR}+))(?P={{0}})"
)
_QUOTED = r"""b?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""
_KEY_VALUE = re.compile(
    r"(?P<key>(?P<q>['\"])" + _SECRET_KEY.format("qkey") + r"(?P=q)\s*:\s*"
    rf"|(?<!{_TOKEN_CHAR})" + _SECRET_KEY.format("bare") + r"(?:\s*=\s*|:[ \t]+))"
    r"(?P<value>" + _QUOTED + r"|<[^<>\n]*>"
    r"|(?i:Bearer|Basic|Digest|Token|Negotiate)\s+\S+|[^\s&;,)}\]'\"]+)"
)
_NOT_SECRET = {"none", "null", "''", '""', "<redacted>"}


def _userinfo_end(text: str, start: int, line_end: int) -> int | None:
    """Where the userinfo of the URL whose authority begins at ``start`` ends (the '@'),
    or None when it has none."""
    if start < len(text) and text[start] == "/":  # file:///path: empty authority
        return None
    bound = line_end
    following = _WORD_URL_START.search(text, start, line_end)
    if following is not None and _ends_before(text, start, following.start()):
        bound = following.start()
    last = None
    for at in _USERINFO_END.finditer(text, start, bound):
        last = at.start()
    return last


def _ends_before(text: str, start: int, following: int) -> bool:
    """Whether ``text[start:following]`` reads as a URL that is complete without userinfo
    (or holds its own userinfo end), so that the next URL bounds this one."""
    if _USERINFO_END.search(text, start, following):
        return True
    return _PLAIN_AUTHORITY.match(text, start, following) is not None


def _redact_userinfo(text: str) -> str:
    out: list[str] = []
    pos = 0
    while (url := _URL_START.search(text, pos)) is not None:
        start = url.end()
        newline = text.find("\n", start)
        end = _userinfo_end(text, start, len(text) if newline < 0 else newline)
        if end is None:
            out.append(text[pos:start])
            pos = start
        else:
            out.append(text[pos:start] + MASK)
            pos = end  # the '@' and the host stay
    out.append(text[pos:])
    return "".join(out)


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.lower() in _NOT_SECRET:
        return match.group(0)
    if value[:2] in ("b'", 'b"'):
        return f"{match.group('key')}b{value[1]}{MASK}{value[1]}"
    if value[0] in "'\"":
        return f"{match.group('key')}{value[0]}{MASK}{value[0]}"
    if value[0] == "<":
        return f"{match.group('key')}<{MASK}>"
    return f"{match.group('key')}{MASK}"


def redact_url(text: object) -> str:
    """Return ``text`` (a URL, or any text containing URLs and settings) with credentials
    replaced by ``***``: URL userinfo and the values of secret-looking keys.

    ``rtsp://admin:p@ss w/rd@10.0.0.5/stream`` becomes ``rtsp://***@10.0.0.5/stream``;
    ``?password=x``, ``'sasl_plain_password': 'x'`` and ``token=x`` lose their values.
    """
    return _KEY_VALUE.sub(_mask_value, _redact_userinfo(str(text)))


class RedactingFilter(logging.Filter):
    """A handler filter that passes every record with its message, exception and stack
    text redacted (:func:`redact_url`), whichever library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad logging call: show it, redacted
            message = f"{record.msg} (log arguments that do not fit: {record.args!r})"
        record.msg, record.args = redact_url(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_url(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_url(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root
    logger) that has none yet."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def _print_redacted(exc_type: type[BaseException], exc: BaseException | None, tb: object,
                    where: str = "") -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))  # type: ignore[arg-type]
    sys.stderr.write(redact_url(f"{where}{text}"))


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _print_redacted(args.exc_type, args.exc_value, args.exc_traceback, f"Exception in thread {name}:\n")


def install_excepthooks() -> None:
    """Print uncaught exceptions -- of the main thread and of every other thread -- redacted
    (:func:`redact_url`): a traceback that never went through logging shows no secret either.

    >>> install_excepthooks(); sys.excepthook is _print_redacted
    True
    >>> sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
    """
    sys.excepthook = _print_redacted
    threading.excepthook = _thread_hook

