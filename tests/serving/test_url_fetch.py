"""Image URL downloads: a real local HTTP server for the allowed paths, address rules checked before connecting."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.errors import ImageDecodeError
from workbench.serving.url_fetch import UrlFetchError, check_address, fetch_url_bytes, load_image_url
from workbench.settings import load_settings

PHOTO = Path("imagefolder_real/dog/sam_dog.jpg")
EXIF_PHOTO = Path("odd_images/exif_orientation/mmcv_color_exif.jpg")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        routes = {
            "/redirect": lambda: self._redirect("/photo.jpg"),
            "/redirect-chain": lambda: self._redirect("/redirect"),
            "/loop": lambda: self._redirect("/loop"),
            "/to-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data/"),
            "/page": lambda: self._send(b"<html>not an image</html>", "text/html"),
            "/declared-big": lambda: self._send(b"x" * 2000, "image/jpeg"),
            "/streamed-big": self._stream_big,
            "/slow": self._slow,
            "/missing": lambda: self._send(b"gone", "text/plain", status=404),
        }
        if self.path in routes:
            routes[self.path]()
        elif self.path.lstrip("/") in self.files:
            self._send(self.files[self.path.lstrip("/")], "image/jpeg")
        else:
            self._send(b"not found", "text/plain", status=404)

    def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _stream_big(self) -> None:
        # No Content-Length: the limit must be enforced while reading.
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for _ in range(40):
            self.wfile.write(b"y" * 100)

    def _slow(self) -> None:
        time.sleep(1.5)
        self._send(b"late", "image/jpeg")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(shared_data: Path) -> Iterator[str]:
    _Handler.files = {"photo.jpg": (shared_data / PHOTO).read_bytes(), "exif.jpg": (shared_data / EXIF_PHOTO).read_bytes()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any connection is attempted: rejections must happen at resolution."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was attempted to {args[0] if args else kwargs}")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_photo_downloaded_from_loopback_when_allowed(server: str, shared_data: Path) -> None:
    fetched = fetch_url_bytes(f"{server}/photo.jpg", allow_private_addresses=True)

    assert fetched.data == (shared_data / PHOTO).read_bytes()
    assert fetched.content_type == "image/jpeg"
    assert fetched.redirects == 0


def test_redirects_followed_within_limit(server: str) -> None:
    fetched = fetch_url_bytes(f"{server}/redirect-chain", allow_private_addresses=True, max_redirects=2)

    assert fetched.redirects == 2
    assert fetched.url.endswith("/photo.jpg")
    with pytest.raises(UrlFetchError, match="redirected more than 1 times"):
        fetch_url_bytes(f"{server}/redirect-chain", allow_private_addresses=True, max_redirects=1)


def test_exif_photo_decoded_upright(server: str) -> None:
    image = load_image_url(f"{server}/exif.jpg", allow_private_addresses=True)

    assert image.size == (300, 400)
    assert image.mode == "RGB"


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        ("/loop", {}, "redirected more than 3 times"),  # redirect loop
        ("/declared-big", {"max_bytes": 1000}, "2,000 bytes, above the limit of 1,000"),  # Content-Length too big
        ("/streamed-big", {"max_bytes": 1000}, "sent more than 1,000 bytes"),  # no Content-Length, too big
        ("/slow", {"timeout": 0.5}, "timed out after 0.5 s"),  # server slower than the timeout
        ("/missing", {}, "HTTP 404"),  # not found
    ],
)
def test_download_limits(server: str, path: str, kwargs: dict, message: str) -> None:
    with pytest.raises(UrlFetchError, match=message):
        fetch_url_bytes(server + path, allow_private_addresses=True, **kwargs)


def test_redirect_to_metadata_address_rejected(server: str) -> None:
    # Private addresses are allowed here, so only the re-check on the redirect target can stop it.
    with pytest.raises(UrlFetchError, match="169.254.169.254, a cloud metadata address"):
        fetch_url_bytes(f"{server}/to-metadata", allow_private_addresses=True)


def test_html_page_rejected_as_image(server: str) -> None:
    with pytest.raises(UrlFetchError, match="returned a text/html page, not an image"):
        load_image_url(f"{server}/page", allow_private_addresses=True)


def test_loopback_rejected_by_default(server: str, no_connections: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_ALLOW_PRIVATE_URLS", raising=False)

    with pytest.raises(UrlFetchError, match="a loopback address. Allow private addresses in the settings"):
        fetch_url_bytes(f"{server}/photo.jpg", settings=load_settings())


def test_environment_variable_allows_private(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ALLOW_PRIVATE_URLS", "1")

    assert fetch_url_bytes(f"{server}/photo.jpg").data


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1/x", "10.0.0.1, a private address"),  # RFC 1918
        ("http://192.168.1.20:8080/cam.jpg", "a private address"),  # home network
        ("http://169.254.169.254/", "a cloud metadata address"),  # instance metadata
        ("http://169.254.10.10/", "a link-local address"),  # link-local
        ("http://[::1]/x", "a loopback address"),  # IPv6 loopback
        ("http://[::ffff:127.0.0.1]/x", "a loopback address"),  # IPv4-mapped IPv6 loopback
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),  # AWS metadata over IPv6
        ("http://100.64.1.1/", "not a public address"),  # carrier-grade NAT
        ("http://0.0.0.0/", "unspecified"),  # reaches the local host on Linux
        ("ftp://example.com/cat.jpg", "scheme 'ftp'"),  # not http
        ("file:///etc/passwd", "scheme 'file'"),  # local file
        ("cat.jpg", "scheme 'none'"),  # no scheme
        ("http:///cat.jpg", "has no host name"),  # no host
        ("http://user:secret@example.com/a.jpg", "carries credentials"),  # credentials in the URL
        ("http://example.com:99999/a.jpg", "is malformed"),  # port out of range
    ],
)
def test_rejected_before_connecting(url: str, message: str, no_connections: None) -> None:
    with pytest.raises(UrlFetchError, match=message):
        fetch_url_bytes(url, allow_private_addresses=False)


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1, a loopback address"),  # one internal address among public ones
        (["10.1.2.3"], "10.1.2.3, a private address"),  # name for an internal host
        ([], "resolved to no address"),  # empty answer
    ],
)
def test_every_resolved_address_checked(addresses: list[str], message: str, no_connections: None) -> None:
    with pytest.raises(UrlFetchError, match=message):
        fetch_url_bytes("https://images.example.com/cat.jpg", resolver=lambda host, port: addresses,
                        allow_private_addresses=False)


def test_metadata_address_rejected_even_when_private_allowed(no_connections: None) -> None:
    with pytest.raises(UrlFetchError, match="cloud metadata"):
        fetch_url_bytes("http://metadata.internal/", resolver=lambda host, port: ["169.254.169.254"],
                        allow_private_addresses=True)


def test_unresolvable_host_rejected(no_connections: None) -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(UrlFetchError, match="could not be resolved"):
        fetch_url_bytes("http://no-such-host.invalid/x.jpg", resolver=fail)


@pytest.mark.parametrize(
    ("address", "allow_private", "expected"),
    [
        ("8.8.8.8", False, None),  # public IPv4
        ("2606:4700:4700::1111", False, None),  # public IPv6
        ("127.0.0.1", True, None),  # loopback allowed by the setting
        ("169.254.169.254", True, "a cloud metadata address"),  # metadata never allowed
        ("224.0.0.1", True, "a multicast or unspecified address"),  # multicast never allowed
    ],
)
def test_check_address(address: str, allow_private: bool, expected: str | None) -> None:
    assert check_address(address, allow_private=allow_private) == expected


def test_truncated_download_gives_decode_error(server: str, shared_data: Path) -> None:
    data = (shared_data / PHOTO).read_bytes()
    _Handler.files["half.jpg"] = data[: len(data) // 2]

    with pytest.raises(ImageDecodeError, match="image downloaded from .*half.jpg"):
        load_image_url(f"{server}/half.jpg", allow_private_addresses=True)
