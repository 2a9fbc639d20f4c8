"""The tool as users install it: the wheel `pip install .` builds holds every module of the package.

An editable install reads the source tree, so it hides a sub-package left out of the build; a
release once shipped without `delivery_sync/aggregate/` and every ordinary install failed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the files git would commit, as a fresh clone has them: a build in the
    # checkout would take modules from the egg-info and build/ that an editable install left there.
    tree = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("delivery_sync-*.whl")
    return wheel


def test_the_wheel_holds_every_module_of_the_package(wheel):
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "delivery_sync").rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".py")}
    assert source, "no source files found"
    assert source - shipped == set(), "left out of the wheel"
    assert shipped - source == set(), "in the wheel but not in the source tree"


def test_the_wheel_declares_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "delivery-sync = delivery_sync.cli:main" in text
