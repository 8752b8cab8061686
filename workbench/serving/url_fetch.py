"""Download an image from an http or https URL without letting the URL reach internal services.

Rules, applied to the first URL and again to every redirect target:

1. Only http and https URLs with a host name are accepted.
2. The host name is resolved once, and every resolved address must be a public (globally routable) address.
   Private, loopback, link-local, carrier-grade NAT, reserved, multicast and unspecified addresses are
   rejected before any connection is made. `allow_private_addresses` lifts this rule for trusted networks,
   but multicast, unspecified and cloud metadata addresses stay rejected even then.
3. The connection goes to the address that was checked, not to a second DNS answer, so a host that resolves
   to a public address first and to an internal one later (DNS rebinding) cannot slip through. HTTPS still
   verifies the certificate against the host name.
4. At most `max_redirects` redirects, `max_bytes` bytes of body (checked against Content-Length first and
   while reading) and `timeout` seconds in all.

No proxy from the environment is used, because a proxy would connect to addresses this module never checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from PIL import Image

    from workbench.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_MAX_REDIRECTS = 3
DEFAULT_TIMEOUT_SECONDS = 10.0
ALLOW_PRIVATE_ENV = "WORKBENCH_ALLOW_PRIVATE_URLS"
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
# Instance metadata services of AWS, GCP and Azure (169.254.169.254), AWS over IPv6, and Alibaba Cloud.
# They hand out credentials, so they stay unreachable even when private addresses are allowed.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

_METADATA_REASON = "a cloud metadata address"
_NEVER_REASON = "a multicast or unspecified address"

Resolver = Callable[[str, int], list[str]]


class UrlFetchError(WorkbenchError):
    """An image URL that is rejected by the address rules, or whose download fails or exceeds a limit."""


@dataclass(frozen=True)
class FetchedUrl:
    """The body of a successful download and where it finally came from."""

    data: bytes
    url: str
    content_type: str
    redirects: int


def fetch_url_bytes(
    url: str,
    *,
    max_bytes: int | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    allow_private_addresses: bool | None = None,
    settings: Settings | None = None,
    resolver: Resolver | None = None,
) -> FetchedUrl:
    """Download a URL's body under the rules in the module docstring; raise UrlFetchError when one is broken.

    `max_bytes` defaults to Settings.max_image_bytes. `allow_private_addresses` defaults to the settings'
    `allow_private_urls` when it has one, else to the WORKBENCH_ALLOW_PRIVATE_URLS environment variable.
    `resolver(host, port)` returns IP address strings; tests pass one to check the rules without DNS.
    """
    from workbench.settings import load_settings

    settings = settings or load_settings()
    limit = settings.max_image_bytes if max_bytes is None else max_bytes
    allow_private = _allow_private(allow_private_addresses, settings)
    resolve = resolver or _resolve
    deadline = time.monotonic() + timeout

    current = url
    for redirects in range(max_redirects + 1):
        target = _check_url(current)
        address = _checked_address(target.hostname or "", target.port or _default_port(target.scheme), resolve,
                                   allow_private=allow_private, url=current)
        response, connection = _request(target, address, deadline=deadline, timeout=timeout, url=current)
        try:
            if response.status in _REDIRECT_CODES:
                location = response.getheader("Location")
                if not location:
                    raise UrlFetchError(f"{current} returned HTTP {response.status} without a Location header; "
                                        "use the image's final URL.")
                logger.info("URL %s redirects to %s", current, location)
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise UrlFetchError(f"{current} returned HTTP {response.status} {response.reason}; expected 200 "
                                    "with an image. Check that the URL opens the image in a browser.")
            data = _read_limited(response, limit=limit, deadline=deadline, timeout=timeout, url=current)
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            return FetchedUrl(data=data, url=current, content_type=content_type, redirects=redirects)
        finally:
            connection.close()

    raise UrlFetchError(f"{url} redirected more than {max_redirects} times (last target {current}); "
                        "use the image's final URL.")


def load_image_url(
    url: str,
    *,
    settings: Settings | None = None,
    max_pixels: int | None = None,
    allow_private_addresses: bool | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    resolver: Resolver | None = None,
) -> Image.Image:
    """Download an image URL and decode it by the one decoding rule set (upright RGB, pixel limit)."""
    from workbench.data.images import decode_image
    from workbench.errors import ImageDecodeError

    fetched = fetch_url_bytes(url, settings=settings, allow_private_addresses=allow_private_addresses,
                              max_redirects=max_redirects, timeout=timeout, resolver=resolver)
    if fetched.content_type.startswith("text/"):
        raise UrlFetchError(f"{fetched.url} returned a {fetched.content_type} page, not an image; use the direct "
                            "link to the image file (right-click the image, copy image address).")
    try:
        return decode_image(fetched.data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"image downloaded from {fetched.url}: {error}") from error


def check_address(address: str, *, allow_private: bool) -> str | None:
    """Return why an IP address is rejected for outgoing image downloads, or None when it is allowed."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return _METADATA_REASON
    # Python counts some multicast ranges as global, so multicast is checked first.
    if ip.is_multicast or ip.is_unspecified:
        return _NEVER_REASON
    if ip.is_global:
        return None
    for test, what in ((ip.is_loopback, "a loopback address"), (ip.is_link_local, "a link-local address"),
                       (ip.is_private, "a private address")):
        if test:
            return None if allow_private else what
    # Reserved ranges and shared address space (100.64.0.0/10) count as private networks too.
    return None if allow_private else "not a public address"


def _allow_private(explicit: bool | None, settings: Settings) -> bool:
    if explicit is not None:
        return explicit
    configured = getattr(settings, "allow_private_urls", None)
    if configured is not None:
        return bool(configured)
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _check_url(url: str):
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        raise UrlFetchError(f"image URL {text!r} is malformed ({error}); expected http(s)://host/path.") from error
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlFetchError(f"image URL {text!r} uses scheme {parts.scheme or 'none'!r}; only http and https "
                            "URLs are fetched. Download the file and upload it instead.")
    if not parts.hostname:
        raise UrlFetchError(f"image URL {text!r} has no host name; expected http(s)://host/path.")
    if parts.username or parts.password:
        raise UrlFetchError(f"image URL {parts.scheme}://...@{parts.hostname} carries credentials; remove them "
                            "or download the image and upload it.")
    return parts


def _default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _checked_address(host: str, port: int, resolve: Resolver, *, allow_private: bool, url: str) -> str:
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as error:
        raise UrlFetchError(f"host {host!r} of {url} could not be resolved ({error}); check the URL.") from error
    if not addresses:
        raise UrlFetchError(f"host {host!r} of {url} resolved to no address; check the URL.")

    # Every address must pass, since the operating system might pick any of them.
    for address in addresses:
        reason = check_address(address.split("%")[0], allow_private=allow_private)
        if reason:
            hint = ("" if reason in (_METADATA_REASON, _NEVER_REASON) else
                    " Allow private addresses in the settings (WORKBENCH_ALLOW_PRIVATE_URLS=1) to fetch from "
                    "this network.")
            raise UrlFetchError(f"image URL {url} is rejected: host {host!r} resolves to {address}, {reason}."
                                + hint)
    return addresses[0]


def _request(target, address: str, *, deadline: float, timeout: float, url: str):
    remaining = _remaining(deadline, timeout, url)
    connection_class = _PinnedHTTPSConnection if target.scheme.lower() == "https" else _PinnedHTTPConnection
    connection = connection_class(target.hostname, target.port, address=address, timeout=remaining)
    path = target.path or "/"
    if target.query:
        path += "?" + target.query
    try:
        connection.request("GET", path, headers={"User-Agent": "cv-workbench", "Accept": "image/*"})
        return connection.getresponse(), connection
    except TimeoutError as error:
        connection.close()
        raise UrlFetchError(f"{url} timed out after {timeout:g} s; try again or use another URL.") from error
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        raise UrlFetchError(f"downloading {url} failed: {error}.") from error


def _read_limited(response: http.client.HTTPResponse, *, limit: int, deadline: float, timeout: float,
                  url: str) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UrlFetchError(f"{url} is {int(declared):,} bytes, above the limit of {limit:,} bytes "
                            "(Settings.max_image_bytes, WORKBENCH_MAX_IMAGE_BYTES); use a smaller image.")
    chunks: list[bytes] = []
    size = 0
    while True:
        _remaining(deadline, timeout, url)
        try:
            chunk = response.read(_CHUNK_BYTES)
        except TimeoutError as error:
            raise UrlFetchError(f"{url} timed out after {timeout:g} s while sending the body; try again or use another URL.") from error
        except (OSError, http.client.HTTPException) as error:
            raise UrlFetchError(f"downloading {url} failed while reading: {error}.") from error
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise UrlFetchError(f"{url} sent more than {limit:,} bytes, the limit (Settings.max_image_bytes, "
                                "WORKBENCH_MAX_IMAGE_BYTES); use a smaller image.")
        chunks.append(chunk)
    if not size:
        raise UrlFetchError(f"{url} returned an empty body; expected an image file.")
    return b"".join(chunks)


def _remaining(deadline: float, timeout: float, url: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UrlFetchError(f"downloading {url} took longer than {timeout:g} s; try again or use another URL.")
    return remaining


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand; the Host header keeps the URL's host name."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address that still verifies the certificate for the host name."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
