"""Fixtures shared by several test files."""
import shutil

import pytest


@pytest.fixture
def scratch_checkpoints(tmp_path, monkeypatch):
    "A copy of data/checkpoints in a tmp data folder that TLCOURSE_DATA points at."
    from tlcourse.data import data_dir
    shutil.copytree(data_dir() / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path))
    return tmp_path / "checkpoints"
