"""Build docs/plots/offline.html, the page `dvc plots show` fills (.dvc/config names it as
plots.html_template): DVC's own page loads vega, vega-lite and vega-embed from a CDN and, without
a network, draws blank pages in silence. This one carries the three libraries inline, so every
page it makes draws offline, wherever it is moved (`dvc plots show -o` anywhere).

Run it (npm and its registry needed) after changing a version: python docs/plots/make_template.py
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

# The versions DVC 3.67's renderer asks its CDN for are older (vega 5.20.2): these are the
# newest of the same major versions, which read the same specs.
LIBRARIES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
TEMPLATE = Path(__file__).with_name("offline.html")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC Plot</title>
<!-- Made by docs/plots/make_template.py: {versions}, inlined so the page draws offline.
{licence}-->
{scripts}
<style>
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def packed(name: str, version: str, folder: Path) -> tarfile.TarFile:
    """The npm package ``name@version``, fetched with `npm pack` into ``folder``."""
    tarball = subprocess.run(
        ["npm", "pack", "--silent", f"{name}@{version}"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return tarfile.open(folder / tarball)


def main() -> None:
    scripts, licences = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in LIBRARIES.items():
            with packed(name, version, Path(tmp)) as package:
                code = package.extractfile(f"package/build/{name}.min.js").read().decode()
                if "</script" in code or "{plot_divs}" in code:
                    raise SystemExit(f"{name}'s code cannot be inlined as it is")
                scripts.append(f"<script>\n{code}\n</script>")
                # BSD-3-Clause, all three from one lab: its notice travels with the code (vega's
                # package carries no LICENSE file of its own).
                if "package/LICENSE" in package.getnames():
                    text = package.extractfile("package/LICENSE").read().decode()
                    licences.setdefault(text.strip(), name)
    versions = ", ".join(f"{name} {version}" for name, version in LIBRARIES.items())
    licence = "\n".join(f"{name}'s LICENSE:\n{text}\n" for text, name in licences.items())
    TEMPLATE.write_text(
        PAGE.format(versions=versions, licence=licence, scripts="\n".join(scripts)),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
