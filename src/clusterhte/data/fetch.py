"""Put a pinned raw data file in place, verified by its sha256.

:func:`ensure_file` is the one place in the project that may touch the network, and only the
workflow's fetch rules call it. In order, it

1. keeps ``dest`` if it already exists and has the expected sha256;
2. else copies the first existing file among ``local_copies`` (e.g. a read-only shared copy);
3. else downloads ``url`` with :mod:`urllib` (any scheme urllib knows, so ``file://`` works too).

Every route verifies the sha256 before the file appears at ``dest``: the copy or download goes to a
temporary name next to ``dest`` and is renamed into place only when the hash matches, so an
interrupted or corrupted fetch never leaves a file that looks finished. Any failure raises one
:class:`DataFetchError` whose message names the expected and actual hashes (when a file was read),
the destination path and the URL to fetch the file from by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from clusterhte.io import atomic_path

__all__ = ["DataFetchError", "DataUnavailableError", "ensure_file", "sha256_of"]

_CHUNK = 1 << 20


class DataFetchError(RuntimeError):
    """A raw data file could not be put in place with the expected sha256."""


class DataUnavailableError(DataFetchError):
    """No copy of the file could be reached (no local copy, no URL, or the download failed, e.g.
    offline), as opposed to a copy with the wrong content. The workflow skips the study then."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _where(dest: Path, url: str | None) -> str:
    src = f"download it from {url}" if url else "obtain it from its source (see data/README.md)"
    return f"{src} and put it at {dest} (sha256 is checked)"


def ensure_file(dest: str | os.PathLike, sha256: str, url: str | None = None,
                local_copies: Iterable[str | os.PathLike] = (), timeout: float = 60.0) -> Path:
    """Make ``dest`` exist with content of hex digest ``sha256``; return its path.

    Parameters
    ----------
    dest : where the file must end up (parent folders are created).
    sha256 : expected lower-case hex sha256 of the file.
    url : where to download it from when neither ``dest`` nor a local copy exists.
    local_copies : candidate paths of an existing copy, tried in order before the network.
    timeout : seconds for the download connection.

    Raises
    ------
    DataFetchError : a hash mismatch (of ``dest``, a local copy or the download), no source at all,
        or a failed download (offline); the message says what was expected, what was found, and
        where to put the file.
    """
    dest = Path(dest)
    want = str(sha256).strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise DataFetchError(f"{dest}: expected sha256 must be 64 hex digits, got {sha256!r}")

    if dest.exists():
        got = sha256_of(dest)
        if got == want:
            return dest
        raise DataFetchError(
            f"{dest} exists but its sha256 does not match: expected {want}, got {got}. "
            f"Remove it, then {_where(dest, url)}.")

    for cand in local_copies or ():
        cand = Path(cand)
        if not cand.is_file():
            continue
        with atomic_path(dest) as tmp:
            shutil.copyfile(cand, tmp)
            got = sha256_of(tmp)
            if got != want:
                raise DataFetchError(
                    f"local copy {cand} has the wrong sha256: expected {want}, got {got}. "
                    f"Replace it with the original file, or {_where(dest, url)}.")
        return dest

    if not url:
        tried = ", ".join(str(c) for c in (local_copies or ())) or "none given"
        raise DataUnavailableError(
            f"{dest} is missing, no local copy was found (tried: {tried}) and no URL is pinned; "
            f"{_where(dest, url)}; expected sha256 {want}.")

    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, _CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataUnavailableError(
                f"{dest} is missing and the download from {url} failed ({exc}); if you are offline, "
                f"{_where(dest, url)}; expected sha256 {want}.") from exc
        got = sha256_of(tmp)
        if got != want:
            raise DataFetchError(
                f"download from {url} has the wrong sha256: expected {want}, got {got}; nothing was "
                f"written to {dest}. Check the URL, or {_where(dest, url)}.")
    return dest
