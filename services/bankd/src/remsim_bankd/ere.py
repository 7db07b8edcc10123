"""POSIX extended regular expressions, via the C library's ``regcomp``/``regexec``.

The slot file holds reader-name patterns written for the original bankd, which compiles
them with ``REG_EXTENDED``. Python's ``re`` differs in corners that operators use
(``[[:digit:]]``, a backslash inside brackets), so the C library does the matching and
every existing file means exactly what it meant before.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from .errors import ConfigError

__all__ = ["PosixRegex", "RegexError"]

_REG_EXTENDED = 1  # same value in glibc, musl and the BSDs
_REGEX_T_SIZE = 256  # generous: glibc's regex_t is 64 bytes on 64-bit hosts

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.regcomp.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
_libc.regexec.argtypes = (
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_int,
)
_libc.regerror.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)
_libc.regfree.argtypes = (ctypes.c_void_p,)


class RegexError(ConfigError):
    """A pattern that does not compile as a POSIX extended regular expression."""


class PosixRegex:
    """A compiled POSIX ERE; ``search`` matches anywhere in the string (no anchors)."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: ctypes.Array[ctypes.c_char] | None = None
        buf = ctypes.create_string_buffer(_REGEX_T_SIZE)
        rc = _libc.regcomp(buf, pattern.encode(), _REG_EXTENDED)
        if rc != 0:
            reason = ctypes.create_string_buffer(256)
            _libc.regerror(rc, buf, reason, len(reason))
            raise RegexError(reason.value.decode(errors="replace"))
        self._compiled = buf

    def search(self, text: str) -> bool:
        assert self._compiled is not None
        return int(_libc.regexec(self._compiled, text.encode(), 0, None, 0)) == 0

    def __repr__(self) -> str:
        return f"PosixRegex({self.pattern!r})"

    def __del__(self) -> None:
        if self._compiled is not None:
            _libc.regfree(self._compiled)
