"""Let an asv virtualenv import the storage libraries already installed for the asv user.

asv.conf.json runs this inside each fresh asv environment, after installing the commit's memsys
wheel (without dependencies). It writes a .pth file naming the site-packages of the Python that
is on PATH outside the environment (or MEMSYS_ASV_HOST_PYTHON), so the environment imports the
same LMDB, DuckDB, Kuzu, TinyDB, NetworkX, FAISS and Chroma as that Python: every commit is
measured against the same library versions, and nothing is downloaded per environment. memsys
itself still comes from the environment (its site-packages is searched first, and a path line
in a .pth file does not run the host's own .pth files, such as an editable install's finder).

Importing this module does nothing (asv imports every module in the benchmark folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

LIBRARIES = ["numpy", "lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chromadb"]


def host_python() -> str:
    chosen = os.environ.get("MEMSYS_ASV_HOST_PYTHON")
    if chosen:
        return chosen
    here = os.path.realpath(sys.prefix)
    outside = [p for p in os.environ.get("PATH", "").split(os.pathsep)
               if p and not os.path.realpath(p).startswith(here)]
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3", "python"):
        found = shutil.which(name, path=os.pathsep.join(outside))
        if found:
            return found
    raise SystemExit("share_backends: no Python outside the asv environment on PATH; set MEMSYS_ASV_HOST_PYTHON")


def main() -> int:
    python = host_python()
    paths = json.loads(subprocess.run(
        [python, "-c", "import json, site, sysconfig; p = sysconfig.get_paths(); "
                       "print(json.dumps([p['purelib'], p['platlib']]))"],
        check=True, capture_output=True, text=True).stdout)
    own = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    shared = list(dict.fromkeys(p for p in paths if os.path.realpath(p) not in own and os.path.isdir(p)))
    target = os.path.join(sysconfig.get_paths()["purelib"], "memsys-asv-host-backends.pth")
    with open(target, "w") as handle:
        handle.write("".join(f"{p}\n" for p in shared))
    probe = subprocess.run([sys.executable, "-c", "import importlib.util, json, sys; "
                            f"print(json.dumps([m for m in {LIBRARIES!r} if importlib.util.find_spec(m) is None]))"],
                           capture_output=True, text=True)
    missing = json.loads(probe.stdout or "[]")
    print(f"share_backends: {target} -> {shared}; missing libraries: {missing or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
