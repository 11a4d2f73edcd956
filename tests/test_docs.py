"""The docs site builds with mkdocs --strict (no broken link, every nav page present) and the
README stays a short entry point that links to it."""
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_docs_site_builds_strict(tmp_path):
    if shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "matrix" / "index.html").exists()


def test_readme_is_an_entry_point_to_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme) < 8000
    assert "./tools/setup && .venv/bin/foliobench run --all" in readme
    assert "./tools/setup && .venv/bin/python -m pytest" in readme
    for page in ("workloads", "strategies", "live-kernel", "matrix", "history", "performance"):
        assert f"docs/{page}.md" in readme and (REPO / "docs" / f"{page}.md").exists()
