"""The test bed's guest image, built only from Debian packages (no image download):
Debian 12's kernel and an initramfs holding busybox, the kernel's virtio modules,
dropbear with the libraries it links, and an /init that

  - configures eth0 by DHCP (with the classless routes that lead to the metadata
    service) and prints the lease on the console;
  - reads the instance id, hostname and public key from the metadata service
    (its EC2-style plain-text paths) and prints what it got;
  - runs an SSH server (dropbear) that accepts only that key, for root.

Glance holds it as three images, the way nova boots a kernel directly: the kernel
(aki), the initramfs (ari) and a small raw root disk whose properties name both.

Built once per machine under the project cache, keyed by the package versions and
this file:
  guest-image/<key>/vmlinuz, initrd.img, disk.raw, manifest.json
"""
from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

KERNEL_META = "linux-image-amd64"
# What the initramfs unpacks, besides the kernel's modules.
USERSPACE_PACKAGES = ("busybox-static", "dropbear-bin", "libc6", "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10",
                      "zlib1g")
# Loaded with what they need (modules.dep), in that order.
WANTED_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "af_packet")
# The guest computes its own checksums: on Open vSwitch's userspace datapath (the test
# bed's), a packet the guest leaves to the host to checksum reaches conntrack with an
# invalid checksum and is dropped (TCP never connects; ping and DHCP still work).
MODULE_PARAMETERS = {"virtio_net": "csum=0"}
ROOT_DISK_BYTES = 1 << 20  # nova grows it to the flavor's disk; the guest never mounts it
# The kernel's command line in the image's properties: the serial console only, which
# is what nova's console log records.
COMMAND_LINE = "console=ttyS0 no_timer_check"
MARK = "omr-guest:"  # every line the guest prints about itself starts with it

INIT = r"""#!/bin/sh
# The test bed's guest: network by DHCP, identity and key from the metadata service,
# dropbear for SSH. Every line about itself starts with "@MARK@".
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mkdir -p /proc /sys /dev /tmp /run /root/.ssh /etc/dropbear
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
say() { echo "@MARK@ $*" > /dev/console; }
say "booting $(uname -r)"
while read -r module parameters; do insmod "/lib/modules/$module" $parameters 2>/dev/null; done < /etc/modules.order
ip link set lo up
ip link set eth0 up
say "eth0 mac $(cat /sys/class/net/eth0/address)"
# udhcpc stays in the background for renewals once it has a lease.
udhcpc -i eth0 -s /etc/udhcpc.script -O staticroutes -t 60 -T 2 -b
say "routes $(ip -4 route | tr '\n' ';')"
# The port is explicit (a static busybox has no service database to look "http" up
# in), and the time limit is timeout(1): wget -T crashes when a connect times out.
metadata() { timeout 6 wget -q -O - "http://169.254.169.254:80/latest/meta-data/$1" 2>/dev/null; }
for attempt in $(seq 1 60); do
  id=$(metadata instance-id) && [ -n "$id" ] && break
  sleep 2
done
if [ -n "$id" ]; then
  say "instance-id $id"
  name=$(metadata hostname); name=${name%%.*}
  [ -n "$name" ] && hostname "$name" && say "hostname $name"
  metadata public-keys/0/openssh-key > /root/.ssh/authorized_keys
  chmod 0700 /root/.ssh; chmod 0600 /root/.ssh/authorized_keys
  say "public key $(cut -d' ' -f1,3 /root/.ssh/authorized_keys)"
else
  say "no metadata service answered"
fi
# Keys only (-s), root only, host keys made at the first connection (-R).
dropbear -R -s -p 22 && say "ssh on port 22"
say "ready"
while true; do sleep 3600; done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc's hook: apply the lease, the classless routes (option 121, where
# OVN puts the metadata route) or the router, and say what was applied.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        if [ "$2" = 0.0.0.0 ]; then ip route replace "$1" dev "$interface"
        else ip route replace "$1" via "$2" dev "$interface"; fi
        shift 2
      done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    echo "@MARK@ lease $ip/${mask:-24} on $interface router ${router:-none}" > /dev/console
    ;;
esac
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"
SHELLS = "/bin/sh\n"


class GuestImageError(RuntimeError):
    pass


def image_root() -> Path:
    return testbed.cache_root() / "guest-image"


def candidate_versions(packages: Iterable[str]) -> dict[str, str]:
    """The version apt would install of each package, from the host's package lists."""
    names = list(packages)
    out = testbed.run(["apt-cache", "policy", *names], "reading the package versions").stdout
    versions, current = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif current and line.strip().startswith("Candidate:"):
            versions[current] = line.split(":", 1)[1].strip()
    missing = [n for n in names if versions.get(n) in (None, "(none)")]
    if missing:
        raise GuestImageError(f"no Debian package {', '.join(missing)} in the host's package lists "
                              "(run apt-get update)")
    return versions


def kernel_package(meta_deb: Path) -> str:
    """linux-image-amd64 depends on exactly one versioned kernel package."""
    depends = testbed.run(["dpkg-deb", "-f", str(meta_deb), "Depends"], "reading the kernel's package").stdout
    return depends.split(",")[0].split("(")[0].strip()


def download(packages: Iterable[str], into: Path) -> dict[str, Path]:
    """`apt-get download` into a directory; returns each package's .deb."""
    names = list(packages)
    testbed.run(["apt-get", "download", "-q", *names], "downloading Debian packages", cwd=into)
    debs = {}
    for name in names:
        found = sorted(into.glob(f"{name}_*.deb"))
        if not found:
            raise GuestImageError(f"apt-get download left no {name}_*.deb")
        debs[name] = found[-1]
    return debs


def extract(deb: Path, into: Path) -> None:
    testbed.run(["dpkg-deb", "-x", str(deb), str(into)], f"unpacking {deb.name}")


def module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def module_depends(data: bytes) -> list[str]:
    """The `depends=` entry of a module's .modinfo strings (no depmod needed)."""
    for field in data.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[len(b"depends="):].decode().split(",") if d]
    return []


def module_closure(modules_dir: Path, wanted: Iterable[str]) -> list[Path]:
    """Module files to insmod in order: each one after what it depends on. Wanted
    modules the kernel builds in are skipped."""
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko*")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        path = by_name.get(name.replace("-", "_"))
        if path is None or path in ordered:
            return
        for needed in module_depends(module_bytes(path)):
            visit(needed)
        ordered.append(path)

    for name in wanted:
        visit(name)
    return ordered


class Cpio:
    """An initramfs archive (newc format), written in memory."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        self.inode += 1
        header = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
        self.buffer.write(header + encoded)
        self.buffer.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.buffer.write(data)
        self.buffer.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return gzip.compress(self.buffer.getvalue(), compresslevel=6, mtime=0)


def add_tree(archive: Cpio, root: Path, prefix: str, keep: Callable[[str], bool]) -> None:
    """Files of an unpacked package tree (directories, files, symlinks) under prefix."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not keep(relative):
            continue
        name = f"{prefix}{relative}"
        if path.is_symlink():
            archive.symlink(name, os.readlink(path))
        elif path.is_dir():
            archive.directory(name)
        else:
            archive.file(name, path.read_bytes(), path.stat().st_mode & 0o777)


def userspace_file(relative: str) -> bool:
    """From the libraries' and tools' packages: binaries and shared objects, not
    their documentation, locales or gconv modules."""
    skip = ("usr/share/", "usr/lib/x86_64-linux-gnu/gconv", "usr/libexec/", "usr/lib/x86_64-linux-gnu/audit")
    return not relative.startswith(skip)


def build_initramfs(userspace: Path, kernel_tree: Path, kernel_version: str) -> bytes:
    archive = Cpio()
    for directory in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "lib", "lib/modules"):
        archive.directory(directory)
    add_tree(archive, userspace, "", lambda r: userspace_file(r) and r.split("/")[0] in ("usr", "lib", "lib64"))
    archive.file("bin/busybox", (userspace / "bin" / "busybox").read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    modules_dir = kernel_tree / "lib" / "modules" / kernel_version
    order = []
    for module in module_closure(modules_dir, WANTED_MODULES):
        name = module.name.removesuffix(".xz")
        archive.file(f"lib/modules/{name}", module_bytes(module))
        order.append(f"{name} {MODULE_PARAMETERS.get(name.removesuffix('.ko'), '')}".strip())
    archive.file("etc/modules.order", ("\n".join(order) + "\n").encode())
    archive.file("init", INIT.replace("@MARK@", MARK).encode(), 0o755)
    archive.file("etc/udhcpc.script", UDHCPC_SCRIPT.replace("@MARK@", MARK).encode(), 0o755)
    archive.file("etc/passwd", PASSWD.encode())
    archive.file("etc/group", GROUP.encode())
    archive.file("etc/shells", SHELLS.encode())
    return archive.finish()


def image_key(versions: dict[str, str]) -> str:
    return testbed.digest(*(f"{n}={v}" for n, v in sorted(versions.items())), Path(__file__).read_bytes())


def ensure_guest_image(log: Callable[[str], None] = print) -> Path:
    """The directory with vmlinuz, initrd.img, disk.raw and manifest.json; built once
    per machine (about 20 s, most of it downloading the kernel package)."""
    versions = candidate_versions((KERNEL_META, *USERSPACE_PACKAGES))
    target = image_root() / image_key(versions)
    if (target / "manifest.json").is_file():
        return target
    image_root().mkdir(parents=True, exist_ok=True)
    with testbed.file_lock(f"guest-image-{target.name}", log, "the guest image"):
        if (target / "manifest.json").is_file():
            return target
        start = time.time()
        log("building the guest image from Debian packages (once per machine) ...")
        with tempfile.TemporaryDirectory(dir=image_root()) as work:
            work_dir = Path(work)
            meta = download([KERNEL_META], work_dir)[KERNEL_META]
            kernel = kernel_package(meta)
            debs = download([kernel, *USERSPACE_PACKAGES], work_dir)
            kernel_tree, userspace = work_dir / "kernel", work_dir / "userspace"
            extract(debs[kernel], kernel_tree)
            for name in USERSPACE_PACKAGES:
                extract(debs[name], userspace)
            kernel_version = kernel.removeprefix("linux-image-")
            build = work_dir / "image"
            build.mkdir()
            shutil.copyfile(kernel_tree / "boot" / f"vmlinuz-{kernel_version}", build / "vmlinuz")
            (build / "initrd.img").write_bytes(build_initramfs(userspace, kernel_tree, kernel_version))
            with open(build / "disk.raw", "wb") as disk:
                disk.truncate(ROOT_DISK_BYTES)
            manifest = {"kernel": kernel, "kernel_version": kernel_version, "packages": versions,
                        "command_line": COMMAND_LINE, "mark": MARK}
            (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if target.exists():
                testbed.remove_tree(target)
            build.rename(target)
        log(f"guest image ready in {time.time() - start:.0f}s: {target}")
    return target


def main() -> int:
    try:
        print(ensure_guest_image(lambda m: print(f"[guest-image] {m}", file=sys.stderr)))
    except (GuestImageError, testbed.TestbedError) as err:
        raise SystemExit(f"[guest-image] {err}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
