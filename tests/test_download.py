"""`python -m etchat.download`: the base weights into model_zoo/, from files served on 127.0.0.1 and a Hub cache
written in the real layout (offline). The served files carry the published names and shapes (zero-stride tensors and
a sparse safetensors file keep them tiny on disk)."""

import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from etchat.download import EVA_VIT, PHI3, QFORMER, DownloadError, KeyCheckError, fetch_url, install
from etchat.hub import PHI3_REPO
from tests.hub_cache import commit_hash, write_snapshot
from tests.test_model import read_keys

REPO = Path(__file__).resolve().parents[1]
PHI3_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


class FileServer:
    """Serves `files` (name -> bytes) on 127.0.0.1 with HTTP range requests, and can cut a response short."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.cuts: dict[str, int] = {}  # name -> bytes after which its next response stops
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def make_handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            server.requests.append((name, self.headers.get("Range")))
            if name not in server.files:
                self.send_error(404)
                return
            data, start = server.files[name], 0
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if asked and server.ranges:
                start = int(asked.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start : start + server.cuts.pop(name, len(data))])

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server():
    files = FileServer({})
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


def pth_bytes(key_list: str, wrap_in_model: bool = False, edit=None) -> bytes:
    """A .pth with the published names and shapes, every tensor a zero-stride view of one element."""
    state = {key: torch.zeros(()).expand(shape) for key, shape in read_keys(key_list).items()}
    if edit:
        edit(state)
    buffer = io.BytesIO()
    torch.save({"model": state} if wrap_in_model else state, buffer)
    return buffer.getvalue()


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple], dtype: str = "BF16", width: int = 2) -> None:
    """A safetensors file whose header holds `shapes`; its data is a hole (a sparse file), so it takes no disk."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = width * int(torch.tensor(shape).prod())
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


def write_phi3_snapshot(cache: Path, tmp_path: Path) -> Path:
    """The published Phi-3-mini's weight names and shapes (split over two files, as published) in the Hub cache."""
    folder = tmp_path / "phi3-files"
    folder.mkdir()
    keys = {k: v for k, v in read_keys("etchat_phi3_full.tsv").items() if k.startswith(PHI3_PREFIXES)}
    names = sorted(keys)
    write_sparse_safetensors(folder / "model-00001-of-00002.safetensors", {k: keys[k] for k in names[:100]})
    write_sparse_safetensors(folder / "model-00002-of-00002.safetensors", {k: keys[k] for k in names[100:]})
    (folder / "config.json").write_text(json.dumps({"model_type": "phi3", "hidden_size": 3072}))
    return write_snapshot(cache, PHI3_REPO, folder, commit_hash("phi3"))


def run_download(*args, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "etchat.download", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_download_installs_checked_weights_and_a_rerun_keeps_them(server, tmp_path):
    cache, zoo = tmp_path / "hub", tmp_path / "model_zoo"
    snapshot = write_phi3_snapshot(cache, tmp_path)
    eva = pth_bytes("eva_vit_g_pth.tsv")
    qformer = pth_bytes("instruct_blip_vicuna7b_trimmed_pth.tsv", wrap_in_model=True)
    server.files[EVA_VIT.name] = eva
    server.files[QFORMER.name] = qformer[: len(qformer) // 2]  # a server with a broken copy

    first = run_download("--model_zoo", zoo, "--mirror", server.url + "/", "--retries", 0, cache=cache)
    assert first.returncode == 1, first.stderr
    assert (zoo / EVA_VIT.name).read_bytes() == eva
    assert not (zoo / QFORMER.name).exists() and not (zoo / f"{QFORMER.name}.part").exists()
    assert f"model_zoo/{QFORMER.name}.part: not a readable checkpoint" in first.stderr
    assert "1 of 3 item(s) failed: instruct_blip_vicuna7b_trimmed.pth" in first.stderr
    assert re.search(r"eva_vit_g\.pth: 100%", first.stderr)  # the progress bar
    phi3 = zoo / PHI3.name
    assert sorted(os.listdir(phi3)) == sorted(os.listdir(snapshot))
    for name in os.listdir(snapshot):  # hard links to the cache's blobs, not copies
        assert os.path.samefile(phi3 / name, snapshot / name)

    server.files[QFORMER.name] = qformer
    served = len(server.requests)
    second = run_download("--model_zoo", zoo, "--mirror", server.url, cache=cache)
    assert second.returncode == 0, second.stderr
    assert (zoo / QFORMER.name).read_bytes() == qformer
    assert server.requests[served:] == [(QFORMER.name, None)]  # what was in place is checked, not fetched again
    assert f"{EVA_VIT.name}: already there, 524 weights checked" in second.stderr
    assert f"{PHI3.name}: already there, 195 weights checked" in second.stderr
    assert sorted(os.listdir(zoo)) == sorted([PHI3.name, EVA_VIT.name, QFORMER.name])


def test_a_cut_transfer_resumes_where_it_stopped(server, tmp_path):
    data = pth_bytes("eva_vit_g_pth.tsv")
    server.files["eva_vit_g.pth"] = data
    dest, half = tmp_path / "eva_vit_g.pth", len(data) // 2
    url = f"{server.url}/eva_vit_g.pth"

    server.cuts["eva_vit_g.pth"] = half
    with pytest.raises(DownloadError, match=f"stopped at byte {half} of {len(data)}.*a rerun resumes"):
        fetch_url(url, dest, retries=0)
    part = tmp_path / "eva_vit_g.pth.part"
    assert not dest.exists() and part.read_bytes() == data[:half]
    assert fetch_url(url, dest, retries=0) == part
    assert part.read_bytes() == data
    assert server.requests[-1] == ("eva_vit_g.pth", f"bytes={half}-")

    part.unlink()
    server.cuts["eva_vit_g.pth"] = 1000
    fetch_url(url, dest, retries=1)  # cut, then resumed within the call
    assert part.read_bytes() == data and server.requests[-2:] == [
        ("eva_vit_g.pth", None),
        ("eva_vit_g.pth", "bytes=1000-"),
    ]
    fetch_url(url, dest, retries=0)  # already whole: the server answers 416
    assert part.read_bytes() == data


def test_a_server_that_ignores_ranges_makes_the_transfer_start_again(server, tmp_path):
    server.files["eva_vit_g.pth"] = data = pth_bytes("eva_vit_g_pth.tsv")
    server.ranges = False
    (tmp_path / "eva_vit_g.pth.part").write_bytes(b"stale bytes")
    part = fetch_url(f"{server.url}/eva_vit_g.pth", tmp_path / "eva_vit_g.pth", retries=0)
    assert part.read_bytes() == data
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_url(f"{server.url}/absent.pth", tmp_path / "absent.pth", retries=3)
    assert server.requests[-1] == ("absent.pth", None) and len(server.requests) == 2  # a refusal is not retried


def test_weights_that_differ_from_the_published_key_list_are_refused(server, tmp_path):
    def edit(state):
        del state["blocks.39.mlp.fc2.bias"]
        state["pos_embed"] = torch.zeros(()).expand(1, 577, 1408)
        state["extra"] = torch.zeros(1)

    server.files["eva_vit_g.pth"] = pth_bytes("eva_vit_g_pth.tsv", edit=edit)
    dest = tmp_path / "eva_vit_g.pth"
    with pytest.raises(KeyCheckError) as error:
        install(EVA_VIT, dest, mirror=server.url, revision=None, retries=0)
    assert str(error.value) == (
        f"{dest}.part: not the published eva_vit_g.pth (missing [blocks.39.mlp.fc2.bias]; unexpected [extra]; "
        "mis-shaped [pos_embed (1, 577, 1408) instead of (1, 257, 1408)])"
    )
    assert not dest.exists() and not Path(f"{dest}.part").exists()

    dest.write_bytes(server.files["eva_vit_g.pth"])  # a wrong file already in place is reported and left alone
    with pytest.raises(KeyCheckError, match="missing"):
        install(EVA_VIT, dest, mirror=server.url, revision=None, retries=0)
    assert dest.exists()


def test_a_hub_model_that_is_not_phi3_mini_is_refused(hub_cache, tiny_base, tmp_path):
    write_snapshot(hub_cache, PHI3_REPO, tiny_base["model_name_or_path"], commit_hash("tiny"))
    dest = tmp_path / "model_zoo" / PHI3.name
    with pytest.raises(KeyCheckError, match=r"not the published Phi-3-mini-4k-instruct \(missing \[.*mis-shaped \["):
        install(PHI3, dest, mirror=None, revision=None, retries=0)
    assert not dest.exists() and not Path(f"{dest}.part").exists()


# ---- mirrors, retries, concurrent downloads, the model_zoo folder, offline messages -----------------------------


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The waits between retries, recorded instead of slept."""
    import etchat.download as download

    recorded = []
    monkeypatch.setattr(download, "sleep", recorded.append)
    return recorded


def test_retries_wait_longer_each_time(server, tmp_path, waits):
    server.files["eva_vit_g.pth"] = data = pth_bytes("eva_vit_g_pth.tsv")
    server.cuts["eva_vit_g.pth"] = 1000
    part = fetch_url(f"{server.url}/eva_vit_g.pth", tmp_path / "eva_vit_g.pth", retries=3)
    assert part.read_bytes() == data and waits == [2.0]
    waits.clear()
    with pytest.raises(DownloadError):
        fetch_url("http://127.0.0.1:9/eva_vit_g.pth", tmp_path / "x.pth", retries=3, timeout=2)  # nothing listens
    assert waits == [2.0, 4.0, 8.0]


def test_a_mirror_may_be_a_local_folder_or_a_file_url(tmp_path, capfd):
    from etchat.download import main

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / EVA_VIT.name).write_bytes(pth_bytes("eva_vit_g_pth.tsv"))
    for index, source in enumerate((str(mirror), mirror.as_uri())):
        zoo = tmp_path / f"zoo{index}"
        assert main([EVA_VIT.name, "--model_zoo", str(zoo), "--mirror", source]) == 0
        assert (zoo / EVA_VIT.name).read_bytes() == (mirror / EVA_VIT.name).read_bytes()
    assert main([EVA_VIT.name, "--model_zoo", str(tmp_path / "z"), "--mirror", "mirror.example.org/lavis"]) == 2
    (line,) = [line for line in capfd.readouterr().err.splitlines() if "ERROR" in line]
    assert "--mirror mirror.example.org/lavis: neither a folder on this machine nor an http://" in line
    assert not (tmp_path / "z").exists()


def test_two_downloads_into_one_model_zoo_do_not_write_the_same_item(tmp_path, capfd):
    from etchat.download import main
    from etchat.locking import FileLock

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / EVA_VIT.name).write_bytes(pth_bytes("eva_vit_g_pth.tsv"))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    with FileLock(zoo / f".{EVA_VIT.name}.lock", "another download"):
        assert main([EVA_VIT.name, "--model_zoo", str(zoo), "--mirror", str(mirror)]) == 1
    err = capfd.readouterr().err
    assert f"the download of {zoo / EVA_VIT.name} is in use by process {os.getpid()}" in err
    assert sorted(os.listdir(zoo)) == []


def test_the_default_model_zoo_is_the_repositorys_and_messages_name_absolute_paths(tmp_path, monkeypatch, capfd):
    from etchat.download import build_parser, main

    assert build_parser().parse_args([]).model_zoo == str(REPO / "model_zoo")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / EVA_VIT.name).write_bytes(pth_bytes("eva_vit_g_pth.tsv"))
    monkeypatch.chdir(tmp_path)
    assert main([EVA_VIT.name, "--model_zoo", "zoo", "--mirror", str(mirror)]) == 0
    assert f"{tmp_path / 'zoo' / EVA_VIT.name}: downloaded" in capfd.readouterr().err


def test_offline_phi3_says_where_a_local_copy_goes(hub_cache, tmp_path, monkeypatch):
    from etchat.hub import ModelNotFoundError, resolve_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("model_zoo/Phi-3-mini-4k-instruct")
    message = str(error.value)
    assert f"put a copy of the files of {PHI3_REPO} in {tmp_path / 'model_zoo' / 'Phi-3-mini-4k-instruct'}" in message
    assert "python -m etchat.download" in message
