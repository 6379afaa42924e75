"""The guest image builder's pure parts: the initramfs archive and the order the
kernel's modules are loaded in (scripts/guest_image.py)."""
from __future__ import annotations

import gzip
import stat
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import guest_image  # noqa: E402


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) of a gzipped newc cpio archive, as the kernel reads it."""
    raw, entries, at = gzip.decompress(data), {}, 0
    while True:
        header = raw[at:at + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = raw[at + 110:at + 110 + name_size - 1].decode()
        at += 110 + name_size
        at += -at % 4
        content = raw[at:at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, content)


def test_the_archive_holds_directories_files_and_symlinks_as_written():
    archive = guest_image.Cpio()
    archive.directory("bin")
    archive.file("init", b"#!/bin/sh\n", 0o755)
    archive.file("etc/odd", b"x" * 5)  # a size that needs padding
    archive.symlink("bin/sh", "busybox")
    entries = read_newc(archive.finish())
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert entries["etc/odd"][1] == b"xxxxx"
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"


def fake_module(directory: Path, name: str, depends: str) -> None:
    (directory / f"{name}.ko").write_bytes(b"\x7fELF\0" + f"name={name}\0depends={depends}\0".encode())


def test_modules_load_after_what_they_depend_on(tmp_path):
    fake_module(tmp_path, "virtio_ring", "")
    fake_module(tmp_path, "virtio", "virtio_ring")
    fake_module(tmp_path, "failover", "")
    fake_module(tmp_path, "net_failover", "failover")
    fake_module(tmp_path, "virtio_net", "net_failover,virtio,virtio_ring")
    fake_module(tmp_path, "unrelated", "")
    order = [p.stem for p in guest_image.module_closure(tmp_path, ("virtio_net", "built_in_one"))]
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_net")
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert "unrelated" not in order and len(order) == len(set(order)) == 5


def test_the_image_key_follows_the_package_versions():
    one = guest_image.image_key({"busybox-static": "1", "linux-image-amd64": "6.1"})
    assert one == guest_image.image_key({"linux-image-amd64": "6.1", "busybox-static": "1"})
    assert one != guest_image.image_key({"busybox-static": "1", "linux-image-amd64": "6.2"})
