"""Unpacks wheels into a venv under a root folder, as the target's pip would, without
running the target's Python: pypa's installer with the venv's scheme, scripts whose
shebang is the venv's interpreter, no .pyc, INSTALLER "imgforge", RECORD sorted.

Run by Debian's /usr/bin/python3 (python3-installer):
    install_wheels.py ROOT VENV PYVER WHEEL...
ROOT: the image root being assembled; VENV: /opt/<app>/venv as the image sees it.
"""
import os
import sys

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main():
    root, venv, pyver, *wheels = sys.argv[1:]
    site = f"{venv}/lib/python{pyver}/site-packages"
    for path in wheels:
        with WheelFile.open(path) as source:
            name = source.distribution
            scheme = {
                "purelib": site,
                "platlib": site,
                "scripts": f"{venv}/bin",
                "data": venv,
                "headers": f"{venv}/include/site/python{pyver}/{name}",
            }
            dest = SchemeDictionaryDestination(
                scheme,
                interpreter=f"{venv}/bin/python",
                script_kind="posix",
                bytecode_optimization_levels=(),
                destdir=root,
            )
            install(source, dest, additional_metadata={"INSTALLER": b"imgforge\n"})
    # RECORD lists files in the order the wheel stored them plus what the installer
    # added: sorted, it is the same whatever the order.
    top = os.path.join(root, site.lstrip("/"))
    for entry in sorted(os.listdir(top)):
        record = os.path.join(top, entry, "RECORD")
        if entry.endswith(".dist-info") and os.path.isfile(record):
            with open(record, newline="") as f:
                lines = sorted(l for l in f.read().splitlines() if l)
            with open(record, "w", newline="") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
