"""Fetching an archive that is missing: Tiny ImageNet-200 from its official address, resumable (an interrupted
download goes on where it stopped), checked against its size and MD5 before anything reads it."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from .core import TINY_URL, DataError, progress_bar, shown_path, tr


@dataclass(frozen=True)
class Archive:
    """A file to download: where from, under which name, and the size and MD5 it must have."""
    url: str
    name: str
    size: int
    md5: str


TINY_IMAGENET = Archive(TINY_URL, "tiny-imagenet-200.zip",
                        248_100_043, "90528d7ca1a48142e341f4ef8d21d0de")
TINY_URL_ENV = "HW_TINY_URL"     # another address of the same archive (a mirror); the size and MD5 still apply
CHUNK = 1 << 20


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(archive: Archive, folder, progress=True, timeout=60):
    """folder/<archive.name>, downloaded unless it is already there with the right size. The bytes go to
    <name>.part first; a later call resumes it with an HTTP Range request (from scratch where the server ignores
    Range). A response that ends normally must leave the archive's size and MD5, else the file is deleted and
    DataError says so (a proxy's page is not resumed)."""
    folder = Path(folder)
    dest, part = folder / archive.name, folder / (archive.name + ".part")
    if dest.exists() and dest.stat().st_size == archive.size:
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > archive.size:         # not a prefix of this archive
        part.unlink()
        have = 0
    if have < archive.size:         # a complete part (stopped before its check) needs no request
        _fetch(archive, part, have, progress, timeout)
    size = part.stat().st_size
    if size == archive.size and _md5(part) == archive.md5:
        os.replace(part, dest)
        return dest
    part.unlink()
    raise DataError(tr(f"{archive.url} gave a file of {size:,} bytes whose MD5 is not {archive.md5} (expected "
                       f"{archive.size:,} bytes): not the archive (a proxy's page or a damaged copy). It was deleted; "
                       "try again or download it by hand.",
                       f"по адресу {archive.url} пришёл файл {size:,} байт с другой MD5 (ожидался архив "
                       f"{archive.size:,} байт, MD5 {archive.md5}): это не он. Файл удалён; попробуйте снова или "
                       "скачайте архив вручную."))


def _fetch(archive, part, have, progress, timeout):
    """Append the bytes from `have` on to `part` (from 0 where the server ignores Range). A connection that breaks
    keeps what arrived and raises DataError: the next call resumes."""
    print(tr(f"downloading {archive.url} -> {shown_path(part.with_suffix(''))} ({archive.size / 1e6:.0f} MB"
             + (f", resuming at {have / 1e6:.0f} MB" if have else "") + ")",
             f"скачиваю {archive.url} -> {shown_path(part.with_suffix(''))} ({archive.size / 1e6:.0f} МБ"
             + (f", продолжаю с {have / 1e6:.0f} МБ" if have else "") + ")"), flush=True)
    request = urllib.request.Request(archive.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if have and (r.status != 206 or not r.headers.get("Content-Range", "").startswith(f"bytes {have}-")):
                have = 0            # the server sent the whole file (or another range): start over
            bar = progress_bar(None, progress, total=archive.size, initial=have, unit="B", unit_scale=True,
                               desc=archive.name)
            expected, got = int(r.headers.get("Content-Length", -1)), 0
            with open(part, "ab" if have else "wb") as f:
                for block in iter(lambda: r.read(CHUNK), b""):
                    f.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
            if got < expected:      # the connection ended before the body did
                raise http.client.IncompleteRead(b"", expected - got)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:    # a broken connection too
        raise DataError(tr(
            f"cannot download {archive.url} ({e}). Check the network and run the cell again: the download resumes "
            f"from {shown_path(part)}. Or put {archive.name} into {shown_path(part.parent)} yourself.",
            f"не удалось скачать {archive.url} ({e}). Проверьте сеть и запустите ячейку снова: загрузка продолжится "
            f"с {shown_path(part)}. Или положите {archive.name} в {shown_path(part.parent)} сами.")) from e


def tiny_imagenet_archive():
    """The official Tiny ImageNet archive, or the same archive at the address in $HW_TINY_URL."""
    url = os.environ.get(TINY_URL_ENV)
    return replace(TINY_IMAGENET, url=url) if url else TINY_IMAGENET
