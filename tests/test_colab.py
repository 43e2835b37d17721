"""The notebooks' Colab set-up cell, run here with a fake `google.colab` module: nothing happens outside Colab; in
Colab it finds the project in a Drive folder, or clones it shallowly from the URL that tools/set_repository.py wrote,
and installs only what Colab lacks. The links and cells agree with the one URL in pyproject.toml."""
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

import common

sys.path.insert(0, str(common.ROOT / "tools"))
import set_repository  # noqa: E402


def shipped_cell(notebook="02_unet.ipynb"):
    nb = nbformat.read(common.ROOT / notebook, as_version=4)
    return next(c.source for c in nb.cells if "colab-setup" in c.metadata.get("tags", []))


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A Colab runtime: google.colab importable (drive.mount recorded), the working folder /content (here a temporary
    one), pip recorded instead of run; git runs for real. Yields (content folder, calls)."""
    calls = {"pip": [], "git": [], "mount": []}
    drive = types.SimpleNamespace(mount=lambda path: calls["mount"].append(path))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(drive=drive))
    real_run = subprocess.run

    def run(cmd, *a, **kw):
        if cmd[:3] == [sys.executable, "-m", "pip"]:
            calls["pip"].append(cmd[3:])
            return subprocess.CompletedProcess(cmd, 0)
        calls["git"].append(cmd)
        return real_run(cmd, *a, **kw)
    monkeypatch.setattr(subprocess, "run", run)
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    path = list(sys.path)
    yield content, calls
    sys.path[:] = path


def project(folder):
    (folder / "hw").mkdir(parents=True)
    (folder / "hw" / "__init__.py").write_text("")
    (folder / "common.py").write_text("")
    return folder


def test_outside_colab_the_cell_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(set_repository.setup_cell("https://github.com/o/hw"), {})
    assert list(tmp_path.iterdir()) == []


def test_in_colab_it_clones_shallowly_and_installs_only_what_colab_lacks(colab, tmp_path):
    content, calls = colab
    origin = project(tmp_path / "origin" / "hw-unet")
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.check_call(git[:3] + ["init", "-q"])
    for i in range(2):              # two commits: a full clone would carry both
        (origin / "f.txt").write_text(str(i))
        subprocess.check_call(git + ["add", "-A"])
        subprocess.check_call(git + ["commit", "-qm", f"c{i}"])
    exec(set_repository.setup_cell(f"file://{origin}"), {})
    repo = content / "hw-unet"
    assert Path.cwd() == repo and sys.path[0] == str(repo) and (repo / "common.py").exists()
    assert subprocess.check_output(["git", "-C", str(repo), "rev-list", "--count", "HEAD"], text=True).strip() == "1"
    assert not calls["pip"] and not calls["mount"]      # Colab has every package: its torch and kernel stay
    exec(set_repository.setup_cell(f"file://{origin}"), {})      # run again (now inside the clone): nothing more
    assert sum("clone" in c for c in calls["git"]) == 1


def test_a_clone_that_fails_says_why_in_russian(colab, tmp_path):
    content, calls = colab
    with pytest.raises(SystemExit, match="Не удалось клонировать file://.*репозиторий публичный"):
        exec(set_repository.setup_cell(f"file://{tmp_path / 'no-such-repo'}"), {})
    assert not calls["pip"]


def test_opened_from_google_drive_it_uses_the_project_folder_there(colab):
    content, calls = colab
    folder = project(content / "drive" / "MyDrive" / "Colab Notebooks" / "hw-unet")
    exec(shipped_cell(), {})            # the committed cell, which knows no repository URL
    assert Path.cwd() == folder and not calls["git"] and not calls["mount"]


def test_with_no_url_and_no_project_it_mounts_the_drive_then_says_what_to_do_in_russian(colab):
    content, calls = colab
    with pytest.raises(SystemExit, match="Код проекта не найден: положите папку проекта на Google Диск"):
        exec(shipped_cell("01_classifier.ipynb"), {})
    assert calls["mount"] == [str(content / "drive")] and not calls["git"] and not calls["pip"]


def test_colab_needs_nothing_installed_beyond_its_own_packages():
    """The library and the notebooks import only what a Colab runtime has (torch, torchvision, numpy, pandas,
    scikit-learn, matplotlib, tqdm, PIL, ipywidgets): the set-up cell installs nothing, so Colab's torch stays."""
    assert "pip" not in set_repository.setup_cell("https://github.com/o/hw")
    colab_has = {"torch", "torchvision", "numpy", "pandas", "sklearn", "matplotlib", "tqdm", "PIL", "ipywidgets",
                 "IPython", "google"}
    import ast
    sources = [p.read_text() for p in sorted((common.ROOT / "hw").glob("*.py"))] + [
        c.source for n in ("01_classifier.ipynb", "02_unet.ipynb", "03_backbone_unet.ipynb")
        for c in nbformat.read(common.ROOT / n, as_version=4).cells if c.cell_type == "code"]
    imported = set()
    for src in sources:
        src = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    import sys as _sys
    third_party = {m for m in imported - set(_sys.stdlib_module_names) if m not in ("hw", "common", "experiments")}
    assert third_party <= colab_has, third_party - colab_has


def test_the_notebooks_readme_and_pyproject_name_the_same_repository():
    assert set_repository.main(["--check"]) == 0


@pytest.mark.parametrize("remote", ["git@github.com:student/hw-unet.git", "https://github.com/student/hw-unet.git",
                                    "https://ghp_token1@github.com/student/hw-unet/", "https://github.com/student/hw-unet"])
def test_a_remote_in_any_form_gives_the_same_links_and_never_a_token(remote):
    url = set_repository.normalise(remote)
    assert url == "https://github.com/student/hw-unet"
    nb = nbformat.read(common.ROOT / "03_backbone_unet.ipynb", as_version=4)
    assert set_repository.render_notebook(nb, url, "03_backbone_unet.ipynb")
    assert ("[Открыть в Colab](https://colab.research.google.com/github/student/hw-unet/blob/main/"
            "03_backbone_unet.ipynb)") in nb.cells[0].source
    assert f"REPO_URL = '{url}'" in next(c.source for c in nb.cells if "colab-setup" in c.metadata.get("tags", []))
    readme = set_repository.render_readme("a\n<!-- colab:start -->\nold\n<!-- colab:end -->\nb", url)
    assert "https://colab.research.google.com/github/student/hw-unet/blob/main/01_classifier.ipynb" in readme
