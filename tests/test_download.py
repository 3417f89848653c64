"""Tests for mnist_jax.download against local HTTP servers on 127.0.0.1 (never a real host).

No test reads the clock: that a hopeless download fails fast is shown by the timeout each connection is given and
by how many connections it makes, which bound its time on any machine.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mnist_jax import download
from mnist_jax.download import MIRRORS, STAMP_SUFFIX, default_cache_dir, fetch_mnist
from mnist_jax.errors import DataError

LOCALHOST = "127.0.0.1"
FAST_TIMEOUT = 0.5  # seconds; the local server answers in milliseconds
POLL_INTERVAL = 0.01  # seconds; lets server shutdown return quickly at teardown
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass
class Server:
    """A local static-file server rooted at `root` that records request paths."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    def mirror(self, sub: str) -> str:
        """Return the base URL of mirror folder `sub`, creating that folder."""
        (self.root / sub).mkdir(exist_ok=True)
        return f"{self.url}/{sub}/"

    def count(self, name: str) -> int:
        """Return how many requests asked for a file called `name`."""
        return sum(path.endswith("/" + name) for path in self.requests)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep urllib from routing 127.0.0.1 through a proxy from the environment."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Small gzip payloads standing in for MNIST; MNIST_FILES is patched to their md5s."""
    gz: dict[str, bytes] = {}
    md5s: dict[str, str] = {}
    for name in download.MNIST_FILES:
        raw = name.encode() * 200
        gz[name] = gzip.compress(raw, mtime=0)
        md5s[name] = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(download, "MNIST_FILES", md5s)
    return gz


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Serve tmp_path/www over HTTP on an ephemeral 127.0.0.1 port."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    httpd = ThreadingHTTPServer((LOCALHOST, 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(POLL_INTERVAL,), daemon=True)
    thread.start()
    try:
        yield Server(root=root, url=f"http://{LOCALHOST}:{httpd.server_port}", requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def publish(server: Server, sub: str, files: dict[str, bytes]) -> str:
    """Write files into mirror folder `sub` and return that mirror's URL."""
    url = server.mirror(sub)
    for name, data in files.items():
        (server.root / sub / name).write_bytes(data)
    return url


def closed_port() -> int:
    """Return a 127.0.0.1 port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_listener() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts connections but never answers; yields (url, accepted sockets)."""
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return  # listener closed at teardown

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{listener.getsockname()[1]}/", accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Every URL the downloader opens, with the timeout it gives urlopen (seconds per connect and per read)."""
    calls: list[tuple[str, float]] = []
    real_urlopen = urllib.request.urlopen

    def recording_urlopen(request, *args, **kwargs):
        # urlopen(url, data=None, timeout=...); None: no timeout given, a socket that may wait forever.
        calls.append((request.full_url, kwargs.get("timeout", args[1] if len(args) > 1 else None)))
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    return calls


def fetch(cache: Path, mirrors: list[str] | tuple[str, ...], **kwargs: object) -> Path:
    """Call fetch_mnist quietly with a short timeout."""
    kwargs.setdefault("timeout", FAST_TIMEOUT)
    kwargs.setdefault("progress", False)
    return fetch_mnist(cache, mirrors, **kwargs)  # type: ignore[arg-type]


# --- happy path and caching -------------------------------------------------


def test_fetch_downloads_all_files_into_cache(tmp_path, server, fake_files):
    mirror = publish(server, "good", fake_files)
    cache = tmp_path / "cache" / "nested"

    result = fetch(cache, [mirror])

    assert result == cache
    for name, data in fake_files.items():
        assert (cache / name).read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == verified_listing(fake_files)  # no temporary file left


def test_second_call_makes_no_requests(tmp_path, server, fake_files):
    mirror = publish(server, "good", fake_files)
    fetch(tmp_path / "cache", [mirror])
    assert len(server.requests) == len(fake_files)

    fetch(tmp_path / "cache", [mirror])

    assert len(server.requests) == len(fake_files)


def verified_listing(files) -> list[str]:
    """The cache folder after a good download: each file, and the stamp that records it passed its md5."""
    return sorted([*files, *(name + STAMP_SUFFIX for name in files)])


def test_cached_files_need_no_network_at_all(tmp_path, fake_files):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, data in fake_files.items():
        (cache / name).write_bytes(data)

    assert fetch(cache, [f"http://{LOCALHOST}:{closed_port()}/"]) == cache


def test_a_verified_cache_is_not_decompressed_again_until_a_file_changes(tmp_path, fake_files, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, data in fake_files.items():
        (cache / name).write_bytes(data)
    checked = []
    real_md5 = download._decompressed_md5
    monkeypatch.setattr(download, "_decompressed_md5", lambda path: checked.append(path.name) or real_md5(path))
    offline = [f"http://{LOCALHOST}:{closed_port()}/"]

    fetch(cache, offline)
    assert sorted(checked) == sorted(fake_files)  # the first load verifies every file
    checked.clear()
    fetch(cache, offline)
    assert checked == []  # later loads trust the stamps
    name = next(iter(fake_files))
    (cache / name).write_bytes(gzip.compress(b"tampered"))
    with pytest.raises(DataError):  # the changed file is checked again, fails, and cannot be fetched offline
        fetch(cache, offline)
    assert checked == [name]


def test_md5_is_checked_on_decompressed_bytes(tmp_path, server, fake_files):
    # A mirror that recompresses differently still passes: only the content matters.
    recompressed = {n: gzip.compress(gzip.decompress(d), compresslevel=1, mtime=123)
                    for n, d in fake_files.items()}
    assert recompressed != fake_files
    mirror = publish(server, "recompressed", recompressed)

    fetch(tmp_path / "cache", [mirror])

    assert (tmp_path / "cache" / next(iter(fake_files))).exists()


def test_mirror_without_trailing_slash(tmp_path, server, fake_files):
    mirror = publish(server, "good", fake_files).rstrip("/")

    fetch(tmp_path / "cache", [mirror])

    assert server.count(next(iter(fake_files))) == 1


def test_only_missing_files_are_downloaded(tmp_path, server, fake_files):
    mirror = publish(server, "good", fake_files)
    cache = tmp_path / "cache"
    cache.mkdir()
    present, *missing = fake_files
    (cache / present).write_bytes(fake_files[present])

    fetch(cache, [mirror])

    assert server.count(present) == 0
    assert all(server.count(name) == 1 for name in missing)


def test_default_cache_dir_used_when_none(tmp_path, server, fake_files, monkeypatch):
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path / "from_env"))
    mirror = publish(server, "good", fake_files)

    result = fetch_mnist(None, [mirror], timeout=FAST_TIMEOUT, progress=False)

    assert result == tmp_path / "from_env"
    assert sorted(p.name for p in result.iterdir()) == verified_listing(fake_files)


# --- mirror fallback ----------------------------------------------------------


def test_404_on_first_mirror_falls_back_to_second(tmp_path, server, fake_files, caplog):
    empty = server.mirror("empty")
    good = publish(server, "good", fake_files)

    with caplog.at_level(logging.WARNING, logger=download.__name__):
        fetch(tmp_path / "cache", [empty, good])

    assert all((tmp_path / "cache" / name).exists() for name in fake_files)
    assert "404" in caplog.text


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: gzip.compress(b"wrong content"), id="bad-md5"),
        pytest.param(lambda data: b"<html>not gzip</html>", id="not-gzip"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    ],
)
def test_corrupt_first_mirror_falls_back_to_second(tmp_path, server, fake_files, caplog, corrupt):
    bad = publish(server, "bad", {n: corrupt(d) for n, d in fake_files.items()})
    good = publish(server, "good", fake_files)
    cache = tmp_path / "cache"

    with caplog.at_level(logging.WARNING, logger=download.__name__):
        fetch(cache, [bad, good])

    for name, data in fake_files.items():
        assert (cache / name).read_bytes() == data
    assert "failed" in caplog.text
    assert sorted(p.name for p in cache.iterdir()) == verified_listing(fake_files)  # no temporary file left


def test_unreachable_mirror_is_skipped_for_later_files(tmp_path, server, fake_files,
                                                       silent_listener, opened, caplog):
    dead, accepted = silent_listener
    good = publish(server, "good", fake_files)

    with caplog.at_level(logging.WARNING, logger=download.__name__):
        fetch(tmp_path / "cache", [dead, good], timeout=FAST_TIMEOUT)

    # One timeout for the first file, then the dead mirror is not asked again.
    assert len(accepted) == 1
    assert [url for url, _ in opened if url.startswith(dead)] == [dead + next(iter(fake_files))]
    assert {timeout for _, timeout in opened} == {FAST_TIMEOUT}
    assert "timed out" in caplog.text


# --- failures -------------------------------------------------------------------


def test_all_mirrors_bad_raises_data_error(tmp_path, server, fake_files):
    empty = server.mirror("empty")
    bad = publish(server, "bad", {n: b"junk" for n in fake_files})

    with pytest.raises(DataError) as info:
        fetch(tmp_path / "cache", [empty, bad])

    message = str(info.value)
    assert "--data-dir" in message
    assert "MNIST_JAX_DATA_DIR" in message
    assert next(iter(fake_files)) in message
    assert isinstance(info.value, ValueError)


def test_no_leftover_files_after_failure(tmp_path, server, fake_files):
    bad = publish(server, "bad", {n: gzip.compress(b"wrong") for n in fake_files})
    cache = tmp_path / "cache"

    with pytest.raises(DataError):
        fetch(cache, [bad])

    assert list(cache.iterdir()) == []


def test_interrupted_download_leaves_no_file(tmp_path, server, fake_files, monkeypatch):
    mirror = publish(server, "good", fake_files)
    cache = tmp_path / "cache"

    def interrupt(path: Path) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_decompressed_md5", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(cache, [mirror])

    assert list(cache.iterdir()) == []


def test_closed_port_fails_fast(tmp_path, fake_files, opened):
    mirrors = [f"http://{LOCALHOST}:{closed_port()}/" for _ in MIRRORS]

    with pytest.raises(DataError, match="MNIST_JAX_DATA_DIR"):
        fetch_mnist(tmp_path / "cache", mirrors, progress=False)  # default timeout

    # Each mirror is tried once, for the first file, with the default timeout: however slowly a refusal comes, the
    # whole fetch waits at most len(MIRRORS) * DEFAULT_TIMEOUT.
    first = next(iter(fake_files))
    assert opened == [(mirror + first, download.DEFAULT_TIMEOUT) for mirror in mirrors]


def test_silent_server_times_out_fast(tmp_path, fake_files, silent_listener, opened):
    dead, accepted = silent_listener

    with pytest.raises(DataError, match="--data-dir") as info:
        fetch(tmp_path / "cache", [dead], timeout=FAST_TIMEOUT)

    # One connection, given our timeout, that ended in a timeout: the fetch waited one timeout, not one per file.
    assert opened == [(dead + next(iter(fake_files)), FAST_TIMEOUT)] and len(accepted) == 1
    assert "timed out" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_uncreatable_cache_dir_raises_data_error(tmp_path, fake_files):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(DataError, match="--data-dir"):
        fetch(blocker / "cache", [f"http://{LOCALHOST}:{closed_port()}/"])


# --- corrupt cache ----------------------------------------------------------------


@pytest.mark.parametrize("junk", [gzip.compress(b"stale"), b"not gzip at all"], ids=["md5", "gzip"])
def test_corrupt_cached_file_is_redownloaded(tmp_path, server, fake_files, caplog, junk):
    mirror = publish(server, "good", fake_files)
    cache = tmp_path / "cache"
    fetch(cache, [mirror])
    victim, *others = fake_files
    (cache / victim).write_bytes(junk)

    with caplog.at_level(logging.WARNING, logger=download.__name__):
        fetch(cache, [mirror])

    assert (cache / victim).read_bytes() == fake_files[victim]
    assert server.count(victim) == 2
    assert all(server.count(name) == 1 for name in others)
    assert "corrupt" in caplog.text


# --- progress bar -----------------------------------------------------------------


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_goes_to_stderr_only_when_asked(tmp_path, server, fake_files, capsys,
                                                     progress):
    mirror = publish(server, "good", fake_files)

    fetch(tmp_path / "cache", [mirror], progress=progress)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert (next(iter(fake_files)) in captured.err) is progress


# --- default_cache_dir --------------------------------------------------------------


def test_default_cache_dir_prefers_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_cache_dir() == tmp_path / "explicit"


def test_default_cache_dir_uses_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_cache_dir() == tmp_path / "xdg" / "mnist_jax" / "mnist"


def test_default_cache_dir_falls_back_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_JAX_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_cache_dir() == tmp_path / ".cache" / "mnist_jax" / "mnist"


def test_empty_env_vars_are_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_cache_dir() == tmp_path / ".cache" / "mnist_jax" / "mnist"


def test_mnist_files_are_the_canonical_four():
    assert download.MNIST_FILES == {
        "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
    }
