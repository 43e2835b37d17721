"""Tiny ImageNet fetched when missing, against a local HTTP server on 127.0.0.1 that serves a synthetic archive in
the official layout: progress, resume with a Range request after a broken connection, the size and MD5 check, and
the notebook's path (the archive found missing, downloaded once, unpacked once). Nothing here touches the internet."""
import hashlib
import http.server
import threading
import zipfile

import pytest

import common
import hw.download
from hw.download import Archive


class Server(http.server.ThreadingHTTPServer):
    """Serves one file at /<name>, honouring "Range: bytes=N-"; `cut_after` bytes into the first response it drops
    the connection (a network that fails mid-way). Records the Range header of every request."""

    def __init__(self, payload, name, cut_after=None, ignore_range=False):
        self.payload, self.name, self.cut_after, self.ignore_range, self.ranges = payload, name, cut_after, \
            ignore_range, []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/{self.name}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        rng = None if srv.ignore_range else rng
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = srv.payload[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[:srv.cut_after], None
            self.wfile.write(body)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(payload, name="tiny-imagenet-200.zip", cut_after=None, ignore_range=False):
        srv = Server(payload, name, cut_after, ignore_range)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory):
    """The bytes of a synthetic tiny-imagenet-200.zip: the official layout (train and val), 6 classes."""
    base = tmp_path_factory.mktemp("tinyzip")
    root = common.make_synthetic_tiny_imagenet(base / "tiny-imagenet-200", n_classes=6, n_train=12, n_val=4, seed=0)
    with zipfile.ZipFile(base / "t.zip", "w") as zf:
        for f in sorted(root.rglob("*")):
            zf.write(f, f.relative_to(base).as_posix())
    return (base / "t.zip").read_bytes()


def archive(srv, payload, md5=None):
    return Archive(srv.url, "tiny-imagenet-200.zip", len(payload), md5 or hashlib.md5(payload).hexdigest())


def test_download_checks_the_archive_and_is_done_once(serve, tiny_zip, tmp_path):
    srv = serve(tiny_zip)
    path = hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False)
    assert path == tmp_path / "tiny-imagenet-200.zip" and path.read_bytes() == tiny_zip
    assert hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False) == path
    assert srv.ranges == [None]                 # the second call found the finished file: no request
    assert not list(tmp_path.glob("*.part"))


def test_an_interrupted_download_resumes_where_it_stopped(serve, tiny_zip, tmp_path, capsys):
    srv = serve(tiny_zip, cut_after=len(tiny_zip) // 3)
    with pytest.raises(common.DataError, match="run the cell again"):
        hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False)
    part = tmp_path / "tiny-imagenet-200.zip.part"
    assert part.stat().st_size == len(tiny_zip) // 3                # what arrived is kept
    path = hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False)
    assert srv.ranges == [None, f"bytes={len(tiny_zip) // 3}-"]     # the second request asked for the rest only
    assert path.read_bytes() == tiny_zip and not part.exists()
    assert "resuming at" in capsys.readouterr().out


def test_a_server_that_ignores_range_gets_the_whole_file_again(serve, tiny_zip, tmp_path):
    srv = serve(tiny_zip, cut_after=1000, ignore_range=True)
    with pytest.raises(common.DataError, match="run the cell again"):
        hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False)
    path = hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False)
    assert srv.ranges == [None, "bytes=1000-"] and path.read_bytes() == tiny_zip      # 200, not 206: from byte 0


def test_a_complete_part_left_before_its_check_is_checked_without_a_request(serve, tiny_zip, tmp_path):
    srv = serve(tiny_zip)
    (tmp_path / "tiny-imagenet-200.zip.part").write_bytes(tiny_zip)
    assert hw.download.download(archive(srv, tiny_zip), tmp_path, progress=False).read_bytes() == tiny_zip
    assert srv.ranges == []


def test_a_short_page_instead_of_the_archive_is_not_resumed(serve, tmp_path):
    """A proxy's page: a complete response, far smaller than the archive."""
    srv = serve(b"<html>log in to the network</html>")
    with pytest.raises(common.DataError, match="not the archive"):
        hw.download.download(Archive(srv.url, "t.zip", 10_000, "0" * 32), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_a_file_with_another_md5_is_refused_and_deleted(serve, tiny_zip, tmp_path):
    srv = serve(tiny_zip)
    with pytest.raises(common.DataError, match="MD5"):
        hw.download.download(archive(srv, tiny_zip, md5="0" * 32), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_no_server_gives_a_clear_error(tmp_path, serve, tiny_zip):
    srv = serve(tiny_zip)
    url = srv.url
    srv.shutdown()
    srv.server_close()
    with pytest.raises(common.DataError, match="cannot download"):
        hw.download.download(Archive(url, "x.zip", 10, "0" * 32), tmp_path, progress=False, timeout=5)


def test_the_notebook_downloads_tiny_imagenet_when_it_is_missing(serve, tiny_zip, tmp_path, monkeypatch):
    """No Tiny ImageNet anywhere: the cpu profile's data cell fetches the archive (the official address replaced by
    the local server), unpacks it once, reads train and the official val; a second run downloads nothing."""
    srv = serve(tiny_zip)
    monkeypatch.setattr(hw.download, "TINY_IMAGENET", archive(srv, tiny_zip))
    monkeypatch.setenv("HW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HW_SHARED_DATA", str(tmp_path / "none"))
    monkeypatch.setattr(hw.data, "COLAB_PLACES", ())
    assert common.find_dataset("tiny") is None
    train, val, test, info = common.recipe("cpu", num_classes=6).datasets("tiny", progress=False)
    assert len(train) + len(val) == 6 * 12 and len(test) == 6 * 4 and info["root"].endswith("tiny-imagenet-200.zip")
    assert common.find_dataset("tiny") == tmp_path / "data" / "tiny-imagenet-200.zip"
    common.recipe("cpu", num_classes=6).datasets("tiny", progress=False)
    assert srv.ranges == [None]


def test_a_mirror_of_the_archive_replaces_the_official_address(monkeypatch):
    assert hw.download.tiny_imagenet_archive() == hw.download.TINY_IMAGENET
    assert hw.download.TINY_IMAGENET.url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    monkeypatch.setenv(hw.download.TINY_URL_ENV, "http://127.0.0.1:1/t.zip")
    a = hw.download.tiny_imagenet_archive()
    assert a.url == "http://127.0.0.1:1/t.zip" and (a.size, a.md5) == (248_100_043, "90528d7ca1a48142e341f4ef8d21d0de")
