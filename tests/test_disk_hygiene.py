"""The suite cleans up after itself (pytest.ini + tests/conftest.py): a small suite run with the repository's
own pytest.ini and conftest.py leaves nothing behind when it passes, and keeps a failing module's folders."""
import os
import shutil
import subprocess
import sys
import textwrap

from helpers import REPO

MODULE = textwrap.dedent('''
    import pytest

    @pytest.fixture(scope="module")
    def folder(tmp_path_factory):
        path = tmp_path_factory.mktemp("{name}_module")
        (path / "checkpoint.pth").write_bytes(b"0" * 1000)
        return path

    def test_writes(folder, tmp_path):
        (tmp_path / "out.txt").write_text("x")
        assert {ok}
''')


def run_suite(root, modules):
    """Run ``modules`` ({name: passes}) with the repository's pytest.ini and conftest.py; the names left in
    the base temp folder afterwards (pytest's own "...current" links aside)."""
    os.makedirs(root / "tests")
    shutil.copy(os.path.join(REPO, "pytest.ini"), root / "pytest.ini")
    shutil.copy(os.path.join(REPO, "tests", "conftest.py"), root / "tests" / "conftest.py")
    for name, ok in modules.items():
        (root / "tests" / f"test_{name}.py").write_text(MODULE.format(name=name, ok=ok))
    base = root / "base"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", f"--basetemp={base}"], cwd=root,
                   capture_output=True, text=True, timeout=120)
    return sorted(p.name for p in base.iterdir() if not p.is_symlink())


def test_a_passing_suite_leaves_no_folder_behind(tmp_path):
    assert run_suite(tmp_path, {"first": True, "second": True}) == []


def test_a_failing_module_keeps_its_folders_and_only_its(tmp_path):
    left = run_suite(tmp_path, {"first": True, "second": False, "third": True})
    assert left == ["second_module0", "test_writes0"]
