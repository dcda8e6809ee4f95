#!/usr/bin/python3
"""check-card-drivers.py CARD.img --node PATH [--device MODALIAS] [--network]

An independent check that a Raspberry Pi card can reach its root on a real board: every
device-tree node on the way to the root's storage has its driver in the card's initramfs
(or built into the kernel), and every node of the wired network has its driver in the
root's modules.

It shares no code with imgforge (which derives the driver set in src/board/): it reads the
card with tools we did not write -- sfdisk for the partitions, mtools for the boot
partition, debugfs for the root, fdtget for the device trees, cpio for the initramfs --
and walks the trees by the devicetree specification's rules in its own way.

  --node PATH   the storage controller's node (the SD slot: /emmc2bus/mmc@7e340000 on a
                Pi 4, /soc@107c000000/mmc@fff000 on a Pi 5), as the boards' documentation
                and device trees name it
  --device MODALIAS
                a device behind that controller that the root is on, by its modalias (an
                NVMe drive: pci:v*d*sv*sd*bc01sc08i02); its driver (by modules.alias) and
                the driver's dependencies must be in the initramfs
  --dtb NAME    check only these device trees (default: every bcm27*.dtb on the card)
  --network     also check the node of /aliases/ethernet0 against the root's modules

Exit 0 when every node has its driver; 1 naming each node and missing driver; 2 when the
card cannot be read.
"""

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile


def run(*cmd, binary=False):
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout if binary else r.stdout.decode()


class Card:
    """The card's boot partition (FAT) and root (ext4), read without mounting."""

    def __init__(self, image, work):
        table = json.loads(run("sfdisk", "--json", image))["partitiontable"]
        sector = self.sector = table.get("sectorsize", 512)
        parts = table["partitions"]
        self.image = image
        self.work = work
        self.boot_offset = self.firmware_boot_partition(parts)["start"] * sector
        # The root is the one cmdline.txt names, as the kernel finds it: a card has several
        # Linux partitions (two root slots and a data partition), so the first one will not do.
        root = self.root_partition(parts, table.get("id", ""))
        # debugfs reads the ext4 in place, at its offset in the card.
        self.root = f"{image}?offset={root['start'] * sector}"

    def firmware_boot_partition(self, parts):
        """The partition the Pi bootloader boots, found as it finds it: the first FAT, or
        where that FAT's autoboot.txt sends it ([all] boot_partition=N, config_txt/autoboot.adoc)."""
        first = parts[0]
        out = subprocess.run(
            ["mtype", "-i", f"{self.image}@@{first['start'] * self.sector}", "::/autoboot.txt"],
            capture_output=True,
        )
        if out.returncode != 0:
            return first
        section, number = "all", None
        for line in out.stdout.decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "all" and line.startswith("boot_partition="):
                number = int(line.split("=", 1)[1])
        if number is None:
            return first
        found = [p for p in parts if re.search(rf"\D{number}$", p["node"])]
        if len(found) != 1:
            raise RuntimeError(f"autoboot.txt's boot_partition={number}: no such partition")
        return found[0]

    def root_partition(self, parts, disk_id):
        cmdline = open(self.boot_file("cmdline.txt")).read().split()
        root = next((w[len("root="):] for w in cmdline if w.startswith("root=")), None)
        if root is None:
            raise RuntimeError(f"cmdline.txt names no root=: {' '.join(cmdline)}")
        linux = [p for p in parts if p["type"] in ("83", "0fc63daf-8483-4772-8e79-3d69d8477de4")]
        if root.startswith("PARTUUID="):
            # An MBR's PARTUUID is <disk id>-<partition number, two hex digits>.
            number = int(root.rsplit("-", 1)[1], 16)
            found = [p for p in parts if re.search(rf"\D{number}$", p["node"])]
        elif root.startswith("UUID="):
            uuid = root[len("UUID="):].lower()
            found = [p for p in linux if self.ext4_uuid(p) == uuid]
        else:
            raise RuntimeError(f"cmdline.txt: root={root} is neither UUID= nor PARTUUID=")
        if len(found) != 1:
            raise RuntimeError(f"cmdline.txt's root={root}: {len(found)} partitions of disk {disk_id} match")
        return found[0]

    def ext4_uuid(self, part):
        out = subprocess.run(
            ["debugfs", "-R", "stats", f"{self.image}?offset={part['start'] * self.sector}"],
            capture_output=True,
        ).stdout.decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("Filesystem UUID:"):
                return line.split(":", 1)[1].strip().lower()
        return None

    def boot_file(self, name):
        out = os.path.join(self.work, name)
        run("mcopy", "-n", "-i", f"{self.image}@@{self.boot_offset}", f"::/{name}", out)
        return out

    def boot_files(self):
        listing = run("mdir", "-b", "-i", f"{self.image}@@{self.boot_offset}", "::/")
        return [l.strip().split("/")[-1] for l in listing.splitlines() if l.strip()]

    def root_file(self, path):
        out = os.path.join(self.work, os.path.basename(path))
        run("debugfs", "-R", f"dump {path} {out}", self.root)
        if not os.path.exists(out) or (os.path.getsize(out) == 0 and "modules" in path):
            raise RuntimeError(f"the root has no {path}")
        return out

    def root_ls(self, path):
        out = run("debugfs", "-R", f"ls -p {path}", self.root)
        # /inode/mode/uid/gid/name/size/
        return [f.split("/")[5] for f in out.splitlines() if f.count("/") >= 6 and f.split("/")[5] not in (".", "..")]


class Tree:
    """A device tree read through fdtget: node paths, properties, phandles."""

    def __init__(self, dtb):
        self.dtb = dtb
        self.paths = []
        self.props = {}
        self.phandles = {}
        stack = ["/"]
        while stack:
            path = stack.pop()
            self.paths.append(path)
            names = run("fdtget", "-p", dtb, path).split()
            self.props[path] = set(names)
            for p in ("phandle", "linux,phandle"):
                if p in names:
                    self.phandles[self.cells(path, p)[0]] = path
            for child in run("fdtget", "-l", dtb, path).split():
                stack.append(("" if path == "/" else path) + "/" + child)

    def has(self, path, prop):
        return prop in self.props.get(path, ())

    def cells(self, path, prop):
        return [int(x, 16) for x in run("fdtget", "-t", "x", self.dtb, path, prop).split()]

    def strings(self, path, prop):
        # fdtget prints a string list separated by spaces; compatibles hold no spaces.
        return run("fdtget", "-t", "s", self.dtb, path, prop).split()

    def parent(self, path):
        return None if path == "/" else (path.rsplit("/", 1)[0] or "/")

    def enabled(self, path):
        return not self.has(path, "status") or self.strings(path, "status")[0] in ("okay", "ok")

    def compatibles(self, path):
        return self.strings(path, "compatible") if self.has(path, "compatible") else []

    def cells_of(self, path, name):
        return self.cells(path, name)[0] if self.has(path, name) else 0

    def suppliers(self, path):
        """(property, node) pairs this node depends on."""
        out = []
        for prop in sorted(self.props[path]):
            if prop.endswith("-supply") or prop == "phy-handle":
                target = self.phandles.get(self.cells(path, prop)[0])
                if target:
                    out.append((prop, target))
            elif re.fullmatch(r"pinctrl-\d+", prop):
                out += [(prop, self.phandles[p]) for p in self.cells(path, prop) if p in self.phandles]
            else:
                count = {
                    "clocks": "#clock-cells", "resets": "#reset-cells",
                    "power-domains": "#power-domain-cells", "mboxes": "#mbox-cells",
                    "dmas": "#dma-cells", "phys": "#phy-cells", "iommus": "#iommu-cells",
                    "pwms": "#pwm-cells", "msi-parent": "#msi-cells",
                    "interrupts-extended": "#interrupt-cells",
                }.get(prop)
                if count is None and (prop in ("gpios", "gpio") or prop.endswith("-gpios") or prop.endswith("-gpio")):
                    count = "#gpio-cells"
                if count is None:
                    continue
                values = self.cells(path, prop)
                i = 0
                while i < len(values):
                    target = self.phandles.get(values[i])
                    i += 1
                    if values[i - 1] == 0:
                        continue
                    if target is None:
                        break
                    out.append((prop, target))
                    i += self.cells_of(target, count)
        if self.has(path, "interrupts"):
            at = path
            while at is not None and not self.has(at, "interrupt-parent"):
                at = self.parent(at)
            if at is not None:
                target = self.phandles.get(self.cells(at, "interrupt-parent")[0])
                if target and target != path:
                    out.append(("interrupts", target))
        return out


class Kernel:
    def __init__(self, card):
        versions = card.root_ls("/usr/lib/modules")
        if len(versions) != 1:
            raise RuntimeError(f"expected one kernel in the root, found {versions}")
        self.version = versions[0]
        base = f"/usr/lib/modules/{self.version}"
        self.aliases = []
        for line in open(card.root_file(f"{base}/modules.alias")):
            w = line.split()
            if len(w) == 3 and w[0] == "alias" and w[1].startswith(("of:", "pci:", "usb:", "platform:")):
                self.aliases.append((w[1], w[2].replace("-", "_")))
        self.files = {}
        self.deps = {}
        for line in open(card.root_file(f"{base}/modules.dep")):
            f, _, deps = line.partition(":")
            name = self.name(f)
            self.files[name] = f
            self.deps[name] = [self.name(d) for d in deps.split()]
        with open(card.boot_file("vmlinuz"), "rb") as k:
            self.image = k.read()

    @staticmethod
    def name(path):
        return os.path.basename(path).split(".ko")[0].replace("-", "_")

    def drivers(self, tree, path):
        """Modules claiming the node, or ['(built in)'], or []."""
        compat = tree.compatibles(path)
        node = path.rsplit("/", 1)[-1].split("@")[0]
        modalias = f"of:N{node}T(null)" + "".join("C" + c for c in compat)
        found = sorted({m for pat, m in self.aliases if fnmatch.fnmatchcase(modalias, pat)})
        if found:
            return found
        if any(b"\0" + c.encode() + b"\0" in self.image for c in compat):
            return ["(built in)"]
        for c in compat:
            m = re.fullmatch(r"pci([0-9a-f]{4}),([0-9a-f]{1,4})", c)
            if m:
                pci = "pci:v0000%04Xd0000%04Xsv00000000sd00000000bc00sc00i00" % (
                    int(m.group(1), 16), int(m.group(2), 16))
                found = sorted({mod for pat, mod in self.aliases if fnmatch.fnmatchcase(pci, pat)})
                if found:
                    return found
        return []

    def by_modalias(self, modalias):
        """Modules whose alias pattern matches a device's modalias."""
        return sorted({m for pat, m in self.aliases if fnmatch.fnmatchcase(modalias, pat)})

    def closure(self, module):
        seen, stack = [], [module]
        while stack:
            for d in self.deps.get(stack.pop(), []):
                if d not in seen:
                    seen.append(d)
                    stack.append(d)
        return seen


def walk(tree, start):
    """Every enabled node the start depends on, with the chain that reached it."""
    order, seen = [], set()
    queue = [(start, start)]
    while queue:
        path, chain = queue.pop(0)
        if path in seen or path == "/":
            continue
        seen.add(path)
        if not tree.compatibles(path):
            # A pin configuration or a state node: its driver is its nearest ancestor's.
            queue.append((tree.parent(path), f"{chain} -> {tree.parent(path)}"))
            continue
        if not tree.enabled(path):
            # A disabled supplier gets no device; fw_devlink does not wait for it.
            continue
        order.append((path, chain))
        queue.append((tree.parent(path), f"{chain} -> {tree.parent(path)}"))
        for prop, target in tree.suppliers(path):
            queue.append((target, f"{chain} -> {prop} {target}"))
    return order


def initramfs_modules(card):
    """Module names in the card's initramfs, listed with cpio."""
    path = card.boot_file("initrd.img")
    with open(path, "rb") as f:
        magic = f.read(4)
    decompress = {b"\x1f\x8b": ["gzip", "-dc"], b"\x28\xb5": ["zstd", "-dc"], b"\xfd7": ["xz", "-dc"]}
    tool = next((t for m, t in decompress.items() if magic.startswith(m)), None)
    if magic.startswith(b"0707"):
        tool = ["cat"]
    if tool is None:
        raise RuntimeError(f"initrd.img: unknown format (magic {magic.hex()})")
    data = run(*tool, path, binary=True)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True).stdout.decode()
    return {Kernel.name(p) for p in listing.split() if re.search(r"\.ko(\.[a-z]+)?$", p)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("card")
    ap.add_argument("--node", required=True)
    ap.add_argument("--dtb", action="append")
    ap.add_argument("--network", action="store_true")
    ap.add_argument("--device", action="append", default=[])
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as work:
            card = Card(a.card, work)
            kernel = Kernel(card)
            in_initramfs = initramfs_modules(card)
            dtbs = a.dtb or sorted(f for f in card.boot_files() if re.fullmatch(r"bcm27\d\d-.*\.dtb", f))
            if not dtbs:
                raise RuntimeError("no bcm27*.dtb on the boot partition")
            failures, checked = [], 0
            print(f"kernel {kernel.version}; initramfs: {len(in_initramfs)} modules")
            for dtb in dtbs:
                tree = Tree(card.boot_file(dtb))
                if a.node not in tree.props:
                    failures.append(f"{dtb}: no node {a.node}")
                    continue
                targets = [("root", a.node)]
                if a.network:
                    if tree.has("/aliases", "ethernet0"):
                        targets.append(("network", tree.strings("/aliases", "ethernet0")[0]))
                    else:
                        failures.append(f"{dtb}: no /aliases/ethernet0")
                for part, start in targets:
                    for path, chain in walk(tree, start):
                        checked += 1
                        compat = tree.compatibles(path)[0]
                        drivers = kernel.drivers(tree, path)
                        if not drivers:
                            failures.append(f"{dtb}: {path} [{compat}]: no driver in kernel {kernel.version} (needed by {chain})")
                            continue
                        if drivers == ["(built in)"]:
                            continue
                        for m in drivers:
                            if m not in kernel.files:
                                failures.append(f"{dtb}: {path} [{compat}]: module {m} is not in the root's modules.dep")
                            elif part == "root":
                                for need in [m] + kernel.closure(m):
                                    if need not in in_initramfs:
                                        failures.append(
                                            f"{dtb}: {path} [{compat}] needs module {need} "
                                            f"({kernel.files[need]}), which is not in the initramfs "
                                            f"(needed by {chain})")
            for dev in a.device:
                found = kernel.by_modalias(dev)
                if not found:
                    failures.append(f"device {dev}: no module in modules.alias claims it")
                for m in found:
                    for need in [m] + kernel.closure(m):
                        if need not in in_initramfs:
                            failures.append(
                                f"device {dev} needs module {need} ({kernel.files.get(need, '?')}), "
                                f"which is not in the initramfs")
            for f in dict.fromkeys(failures):
                print("MISSING " + f)
            print(f"{len(dtbs)} device trees, {checked} nodes checked, {len(set(failures))} problems")
            return 1 if failures else 0
    except (RuntimeError, StopIteration, KeyError, OSError) as e:
        print(f"check-card-drivers: {a.card}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
