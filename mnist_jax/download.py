"""Download the four canonical MNIST files once, verify them and cache them."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mnist_jax.errors import DataError

log = logging.getLogger(__name__)

# md5 of the DECOMPRESSED bytes: mirrors recompress, so the .gz digest varies.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

# Seconds per socket operation (connect, each read), so offline runs fail fast.
DEFAULT_TIMEOUT: float = 5.0
CACHE_DIR_ENV = "MNIST_JAX_CACHE_DIR"
XDG_CACHE_ENV = "XDG_CACHE_HOME"
CACHE_SUBDIR = Path("mnist_jax") / "mnist"
CHUNK_SIZE = 1 << 16
TEMP_SUFFIX = ".part"
STAMP_SUFFIX = ".verified"  # beside each cached file: its md5, size and mtime when it last passed the check
USER_AGENT = "mnist_jax-downloader"
OFFLINE_HINT = (
    "pass --data-dir or set MNIST_JAX_DATA_DIR to a folder with the four MNIST files, "
    "or use --dataset digits to run offline"
)

# Everything a bad mirror or a bad payload can raise; anything else is a bug.
_DOWNLOAD_ERRORS = (OSError, EOFError, zlib.error, http.client.HTTPException)


class _ChecksumMismatch(Exception):
    """The decompressed payload does not have the expected md5."""


def default_cache_dir() -> Path:
    """Return $MNIST_JAX_CACHE_DIR, else $XDG_CACHE_HOME/mnist_jax/mnist, else ~/.cache/..."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get(XDG_CACHE_ENV)
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / CACHE_SUBDIR


def fetch_mnist(
    cache_dir: Path | None = None,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Ensure the four verified MNIST files are in cache_dir and return it."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _make_dir(cache_dir)
    # Mirrors we could not even connect to are skipped for the remaining files,
    # so a dead host costs one timeout per call, not one per file.
    unreachable: dict[str, BaseException] = {}
    for name, md5 in MNIST_FILES.items():
        path = cache_dir / name
        if _is_cached(path, md5):
            continue
        _download(name, md5, path, mirrors, timeout, progress, unreachable)
    return cache_dir


def _make_dir(cache_dir: Path) -> None:
    """Create the cache directory, turning failure into a user-facing DataError."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Could not create the MNIST cache directory {cache_dir} ({err}); {OFFLINE_HINT}."
        ) from err


def _is_cached(path: Path, md5: str) -> bool:
    """Return True if path holds a gzip file whose decompressed md5 matches."""
    if not path.exists():
        return False
    # Decompressing 55 MB costs about half a second a run; a file unchanged since it passed is trusted.
    if _read_stamp(path) == _stamp(path, md5):
        return True
    try:
        if _decompressed_md5(path) == md5:
            _write_stamp(path, md5)
            return True
        reason = "wrong md5"
    except _DOWNLOAD_ERRORS as err:
        reason = f"unreadable: {err}"
    log.warning("Cached %s is corrupt (%s); downloading it again", path, reason)
    return False


def _stamp(path: Path, md5: str) -> str:
    """What identifies a verified file: the md5 it passed, and its size and modification time since."""
    stat = path.stat()
    return f"{md5} {stat.st_size} {stat.st_mtime_ns}"


def _read_stamp(path: Path) -> str | None:
    try:
        return path.with_name(path.name + STAMP_SUFFIX).read_text()
    except OSError:
        return None


def _write_stamp(path: Path, md5: str) -> None:
    try:
        path.with_name(path.name + STAMP_SUFFIX).write_text(_stamp(path, md5))
    except OSError as err:  # a read-only cache still works, it is only checked every time
        log.debug("Could not record that %s was verified: %s", path, err)


def _decompressed_md5(path: Path) -> str:
    """Return the md5 hex digest of the gunzipped content of path."""
    digest = hashlib.md5()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _download(
    name: str,
    md5: str,
    path: Path,
    mirrors: Sequence[str],
    timeout: float,
    progress: bool,
    unreachable: dict[str, BaseException],
) -> None:
    """Fetch name from the first mirror with a verified copy, else raise DataError."""
    last_error: BaseException | None = None
    for mirror in mirrors:
        if mirror in unreachable:
            last_error = unreachable[mirror]
            continue
        url = _join(mirror, name)
        try:
            _download_verified(url, md5, path, timeout, progress)
            return
        except (*_DOWNLOAD_ERRORS, _ChecksumMismatch) as err:
            log.warning("Download of %s failed: %s", url, err)
            last_error = err
            if _is_connection_error(err):
                unreachable[mirror] = err
    raise DataError(
        f"Could not download {name} from any mirror (last error: {last_error}); {OFFLINE_HINT}."
    )


def _join(mirror: str, name: str) -> str:
    """Join a mirror base URL and a file name, with or without a trailing slash."""
    return f"{mirror.rstrip('/')}/{name}"


def _is_connection_error(err: BaseException) -> bool:
    """Return True for failures to reach the host at all, as opposed to a bad response."""
    if isinstance(err, urllib.error.HTTPError):
        return False
    return isinstance(err, (urllib.error.URLError, TimeoutError, ConnectionError))


def _download_verified(url: str, md5: str, path: Path, timeout: float, progress: bool) -> None:
    """Download url into a temp file next to path, verify it, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout, progress, path.name)
        actual = _decompressed_md5(tmp)
        if actual != md5:
            raise _ChecksumMismatch(f"decompressed md5 {actual} != expected {md5}")
        # os.replace is atomic on one filesystem: readers see the old file or the whole new one.
        os.replace(tmp, path)
        _write_stamp(path, md5)
    finally:
        # Also runs on KeyboardInterrupt, so no half file is ever left behind.
        tmp.unlink(missing_ok=True)
    log.info("Downloaded %s", url)


def _stream(url: str, out: BinaryIO, timeout: float, progress: bool, desc: str) -> None:
    """Copy the body of url into out, with an optional tqdm bar on stderr."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = _content_length(response)
        with tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
            file=sys.stderr, disable=not progress, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK_SIZE):
                out.write(chunk)
                bar.update(len(chunk))


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Return the Content-Length header as an int, or None when absent or malformed."""
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None
