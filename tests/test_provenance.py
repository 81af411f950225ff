"""utils/provenance.py: what it records, and that it never fails (no git, not a checkout).

The records written by a training run and by test_net.py are checked in tests/test_train.py."""
import platform
import shutil
import subprocess
import sys

import pytest
import timm
import torch
import torchvision

from utils import provenance
from utils.misc import resolve_amp

FIELDS = {"command", "git_commit", "git_dirty", "versions", "device", "device_name", "amp", "world_size", "started"}


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                          cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout.strip()


def test_fields_and_values():
    info = provenance.collect_provenance(torch.device("cpu"), resolve_amp("off", "cpu"), 1, ["train_net.py", "X"])
    assert set(info) == FIELDS
    assert info["command"] == ["train_net.py", "X"]
    assert info["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                "torchvision": torchvision.__version__, "timm": timm.__version__}
    assert info["device"] == "cpu" and info["amp"] == "off" and info["world_size"] == 1
    assert info["device_name"] is None or isinstance(info["device_name"], str)
    assert provenance.collect_provenance("cpu", "bf16", 2)["command"] == sys.argv  # default: sys.argv
    assert provenance.collect_provenance("cpu", "bf16", 2)["amp"] == "bf16"


def test_command_line():
    assert provenance.command_line() == sys.argv
    assert provenance.command_line(["--config_file", "F", "A.B", 1], "train_net.py") == \
        ["train_net.py", "--config_file", "F", "A.B", "1"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git program")
def test_git_commit_and_dirty_state(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "REPO_ROOT", str(repo))
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_state() == {"git_commit": head, "git_dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.git_state() == {"git_commit": head, "git_dirty": True}
    _git(repo, "checkout", "-q", "--", "a.py")
    (repo / "new.py").write_text("")  # an untracked source file is a difference too
    assert provenance.git_state() == {"git_commit": head, "git_dirty": True}


def test_not_a_checkout_and_no_git(tmp_path, monkeypatch):
    folder = tmp_path / "plain"
    folder.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a repository above
    monkeypatch.setattr(provenance, "REPO_ROOT", str(folder))
    assert provenance.git_state() == {"git_commit": None, "git_dirty": None}
    monkeypatch.setattr(provenance, "REPO_ROOT", str(tmp_path / "missing"))  # cwd that does not exist
    assert provenance.git_state() == {"git_commit": None, "git_dirty": None}
    monkeypatch.setenv("PATH", str(folder))  # no git program at all
    info = provenance.collect_provenance("cpu", None, 1, [])
    assert info["git_commit"] is None and info["git_dirty"] is None and info["amp"] is None


def test_a_hanging_git_is_cut_short(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.2)
    assert provenance.git_state() == {"git_commit": None, "git_dirty": None}
