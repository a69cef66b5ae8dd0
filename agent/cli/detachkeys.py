"""Detach keys of an attached session with a terminal (`run -it`, `exec -it`):
Docker's syntax and default, and the scanner of typed input that finds them.

    --detach-keys SEQ    comma-separated keys: `ctrl-<c>` (c one of a-z, @, [,
                         \\, ], ^, _) or one character; default ctrl-p,ctrl-q

Typed in full, the sequence is not forwarded: agentctl stops forwarding,
says `read escape sequence`, exits 0, and the container (or the exec'd
process) keeps running. A partial match is held back and forwarded as soon
as the next key does not continue it (as Docker's).
"""
from __future__ import annotations

DEFAULT = "ctrl-p,ctrl-q"
SYNTAX = ("comma-separated keys, each ctrl-<a-z, @, [, \\, ], ^ or _> or a single character, "
          "e.g. ctrl-p,ctrl-q (the default)")
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse(text: str) -> bytes:
    """The bytes the sequence types; ValueError (one line) when it is not Docker's syntax."""
    out = bytearray()
    for key in text.split(","):
        low = key.lower()
        if len(key) == 1 and key.isascii():
            out.append(ord(key))
        elif low.startswith("ctrl-") and len(key) == 6 and ("a" <= low[5] <= "z" or low[5] in _CTRL_SPECIAL):
            c = low[5]
            out.append(ord(c) - ord("a") + 1 if "a" <= c <= "z" else _CTRL_SPECIAL[c])
        else:
            raise ValueError(f"--detach-keys: {key!r} is not a key; give {SYNTAX}")
    return bytes(out)


class Scanner:
    """Feed it what is typed: (bytes to forward now, True once the sequence was typed)."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self.held = b""         # a prefix of keys typed so far, not forwarded yet

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            cand = self.held + bytes([b])
            if self.keys.startswith(cand):
                if cand == self.keys:
                    self.held = b""
                    return bytes(out), True
                self.held = cand
                continue
            out += self.held    # not the sequence after all: what was held goes on
            self.held = b""
            if self.keys[:1] == bytes([b]):
                self.held = bytes([b])
            else:
                out.append(b)
        return bytes(out), False


class Detached(Exception):
    """The user typed the detach keys: the session ends, what it ran runs on."""


def add_flag(p) -> None:
    """--detach-keys on an attaching verb's parser (run, exec)."""
    import argparse

    def keys(value: str) -> bytes:
        try:
            return parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("--detach-keys: ")) from None

    p.add_argument("--detach-keys", type=keys, default=parse(DEFAULT), metavar="SEQ",
                   help=f"with -i -t: the keys that detach, leaving it running (default {DEFAULT}; "
                        "comma-separated ctrl-<c> or single characters)")
