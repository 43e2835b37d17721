"""Point the project at its GitHub repository: one command after `git push`, nothing typed in a notebook.

    python tools/set_repository.py              # the URL of `git remote get-url origin` (none: links say how)
    python tools/set_repository.py https://github.com/<owner>/<name> [--branch main]
    python tools/set_repository.py --check      # exit 1 if a notebook or the README differs from pyproject.toml

The URL lives in one place, pyproject.toml ([project.urls] Repository); this tool writes it there and renders from
it what must be readable before the code is: each notebook's "Open in Colab" link (first cell), its Colab set-up
cell (tag "colab-setup": the only code that runs before common.py exists; it installs nothing, as Colab has every
package the notebooks import), and the README's Colab links. Where no
remote is known, the links say how to get them and the set-up cell says, in one Russian line, what to do.
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_classifier.ipynb", "02_unet.ipynb", "03_backbone_unet.ipynb"]
PYPROJECT = ROOT / "pyproject.toml"

SETUP_CELL = '''\
# Colab: код проекта (common.py, hw/) — из папки на Google Диске или неглубокий клон
# с GitHub; всё остальное в Colab уже есть (его torch и ядро не меняются);
# вне Colab ячейка ничего не делает
REPO_URL = {url!r}  # пишет `python tools/set_repository.py` (из git remote)
import os, subprocess, sys
from pathlib import Path
if "google.colab" in sys.modules and not Path("common.py").exists():
    def project(base):  # папка с common.py и hw/: сама base или на один-два уровня ниже
        found = [base / "common.py", *base.glob("*/common.py"),
                 *base.glob("*/*/common.py")]
        return next((p.parent for p in found if (p.parent / "hw").is_dir()), None)
    here, drive = Path.cwd(), Path.cwd() / "drive"
    repo = project(here) or (project(drive / "MyDrive") if drive.is_dir() else None)
    if repo is None and REPO_URL:
        repo = here / REPO_URL.rstrip("/").split("/")[-1]
        clone = ["git", "clone", "-q", "--depth", "1", REPO_URL, str(repo)]
        if subprocess.run(clone).returncode:
            raise SystemExit(f"Не удалось клонировать {{REPO_URL}} в {{repo}}: проверьте, "
                             "что репозиторий публичный, и удалите папку, если она "
                             "осталась от прерванной попытки.")
    if repo is None:  # ноутбук открыт с Google Диска: подключить Диск и искать там
        from google.colab import drive as gdrive
        gdrive.mount(str(drive))
        repo = project(drive / "MyDrive")
    if repo is None:
        raise SystemExit("Код проекта не найден: положите папку проекта на Google Диск "
                         "и запустите ячейку снова (или выполните "
                         "`python tools/set_repository.py` в своём клоне и git push).")
    os.chdir(repo)
    sys.path.insert(0, str(repo))'''
LINK_NONE = ("Открыть в Colab: ссылка появится после `python tools/set_repository.py` (адрес репозитория берётся "
             "из `git remote`).")


def normalise(url):
    """A GitHub remote in any of its forms (https with or without .git and credentials, git@github.com:o/n) ->
    https://github.com/<owner>/<name>; other hosts are kept as given (minus credentials and .git)."""
    url = url.strip()
    if m := re.fullmatch(r"git@([^:]+):(.+?)(?:\.git)?/?", url):
        return f"https://{m[1]}/{m[2]}"
    url = re.sub(r"^(https?://)[^/@]+@", r"\1", url)       # never a token into a notebook
    return re.sub(r"(\.git)?/?$", "", url)


def read_url():
    """The URL in pyproject.toml ([project.urls] Repository), or None."""
    m = re.search(r'^\[project\.urls\]\s*\nRepository = "([^"]*)"', PYPROJECT.read_text(), re.M)
    return m[1] if m else None


def write_url(url):
    text = re.sub(r'\n\[project\.urls\]\s*\nRepository = "[^"]*"\n', "\n", PYPROJECT.read_text())
    if url:
        text = text.replace("\n[project.optional-dependencies]",
                            f'\n[project.urls]\nRepository = "{url}"\n\n[project.optional-dependencies]', 1)
    PYPROJECT.write_text(text)


def colab_link(url, notebook, branch="main"):
    """The notebook's "Open in Colab" line (Colab opens notebooks from GitHub only)."""
    if not url or "github.com/" not in url:
        return LINK_NONE
    return (f"[Открыть в Colab](https://colab.research.google.com/github/{url.split('github.com/')[1]}/blob/"
            f"{branch}/{notebook})")


def setup_cell(url):
    return SETUP_CELL.format(url=url)


def render_notebook(nb, url, notebook, branch="main"):
    """nb (an nbformat notebook) with its Colab link and set-up cell for `url`; True where something changed."""
    first = nb.cells[0]
    lines = first.source.split("\n")
    lines = [colab_link(url, notebook, branch) if ln.startswith(("[Открыть в Colab]", "Открыть в Colab"))
             else ln for ln in lines]
    cells = [c for c in nb.cells if "colab-setup" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{notebook}: expected one cell tagged colab-setup, found {len(cells)}")
    before = (first.source, cells[0].source)
    first.source, cells[0].source = "\n".join(lines), setup_cell(url)
    return (first.source, cells[0].source) != before


def render_readme(text, url, branch="main"):
    links = " · ".join(colab_link(url, n, branch).replace("Открыть в Colab", n) for n in NOTEBOOKS) \
        if url and "github.com/" in url else LINK_NONE
    return re.sub(r"(<!-- colab:start -->\n).*?(\n<!-- colab:end -->)", lambda m: m[1] + links + m[2], text,
                  flags=re.S)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?", help="the repository's URL (default: git remote get-url origin)")
    ap.add_argument("--branch", default="main", help="the branch the Colab links open (default: main)")
    ap.add_argument("--check", action="store_true", help="only check that everything agrees with pyproject.toml")
    args = ap.parse_args(argv)
    if args.check:
        url = read_url()
    else:
        url = args.url or subprocess.run(["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip()
        url = normalise(url) if url else None
        write_url(url)
        if not url:
            print("no URL given and `git remote get-url origin` names none: the links and set-up cells say how to "
                  "get them (push the repository to GitHub, then run this again)")
    stale = []
    for name in NOTEBOOKS:
        path = ROOT / name
        nb = nbformat.read(path, as_version=4)
        if render_notebook(nb, url, name, args.branch):
            stale.append(name)
            if not args.check:
                nbformat.write(nb, path)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if (new := render_readme(readme, url, args.branch)) != readme:
        stale.append("README.md")
        if not args.check:
            (ROOT / "README.md").write_text(new, encoding="utf-8")
    if args.check:
        if stale:
            raise SystemExit(f"not rendered for {url or 'no repository'}: {', '.join(stale)} "
                             "(run python tools/set_repository.py)")
        print(f"every link and set-up cell points at {url or 'no repository (none set)'}")
    else:
        print(f"{url or 'no repository'}: " + (f"wrote {', '.join(stale)} and pyproject.toml" if stale else
                                                "pyproject.toml; the rest already agreed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
