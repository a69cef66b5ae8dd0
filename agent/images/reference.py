"""Image references, normalised as Docker normalises them.

``busybox`` is ``docker.io/library/busybox:latest``; ``127.0.0.1:5000/a/b``
is ``127.0.0.1:5000/a/b:latest``; ``name@sha256:<64 hex>`` pins a manifest.
The grammar is the distribution project's reference grammar.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from agent.errors import UserError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
DOMAIN_RE = re.compile(_DOMAIN)
TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
NAME_MAX = 255

ACCEPTED = ("accepted: [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST], "
            "lowercase path components (e.g. busybox, 127.0.0.1:5000/team/app:1)")


class ReferenceError(UserError):
    """A reference that does not parse; the message names it and what is accepted."""

    kind = "invalid"


class Reference(NamedTuple):
    domain: str        # "docker.io", "127.0.0.1:5000"
    path: str          # "library/busybox"
    tag: str | None    # None when only a digest was given
    digest: str | None

    @property
    def repository(self) -> str:
        """domain/path: the name an image is stored under, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """Where the registry API answers (Docker Hub's API has a host of its own)."""
        return DOCKER_HUB_API if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def familiar(self) -> str:
        """The short form people type: busybox:latest, 127.0.0.1:5000/app:1."""
        s = str(self)
        if self.domain == DEFAULT_DOMAIN:
            s = s[len(DEFAULT_DOMAIN) + 1:]
            if s.startswith("library/") and "/" not in self.path[len("library/"):]:
                s = s[len("library/"):]
        return s

    def with_digest(self, digest: str) -> "Reference":
        return self._replace(digest=digest)


def _is_domain(first: str) -> bool:
    # Docker's rule: the first component names a registry when it has a dot
    # or a port, is "localhost", or has upper-case letters (a path never does)
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


def parse(text: object) -> Reference:
    """Parse and normalise; raises ReferenceError with one line naming what was wrong."""
    if not isinstance(text, str) or not text:
        raise ReferenceError(f"image reference {text!r}: empty or not a string; {ACCEPTED}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise ReferenceError(f"image reference {text!r}: digest {digest!r} is not "
                                 "sha256: followed by 64 lowercase hex digits")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.fullmatch(tag):
            raise ReferenceError(f"image reference {text!r}: tag {tag!r} is not valid "
                                 "(letters, digits, _ . -, at most 128, not starting with . or -)")
    first, sep, remainder = rest.partition("/")
    if sep and _is_domain(first):
        domain, path = first, remainder
        if not DOMAIN_RE.fullmatch(domain):
            raise ReferenceError(f"image reference {text!r}: registry {domain!r} is not a valid host[:port]")
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if not PATH_RE.fullmatch(path):
        raise ReferenceError(f"image reference {text!r}: repository name is not valid; {ACCEPTED}")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise ReferenceError(f"image reference {text!r}: name longer than {NAME_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)
