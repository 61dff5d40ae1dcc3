"""The documentation site builds offline with warnings as errors
(``mkdocs build --strict``; mkdocs-material and mkdocstrings come with the
dev extra, without them this skips).  It builds a copy in a temporary
directory, so the tree gets no ``site/``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import subring

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(subring.__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            pytest.skip(f"{mod} is not installed (pip install -e '.[dev]')")
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    cfg = (ROOT / "mkdocs.yml").read_text().replace("paths: [src]", f"paths: [{SRC}]")
    (tmp_path / "mkdocs.yml").write_text(cfg)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH"))
                                          if p))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in ("index.html", "tutorials/kernel-files/index.html", "api/index.html",
                 "benchmarks/index.html", "guarantees/index.html", "fuse/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    assert "prep_read" in api and "submit_and_wait" in api     # generated from docstrings
