"""Fixtures shared by several test files."""
import shutil

import pytest
import torch


@pytest.fixture
def scratch_checkpoints(tmp_path, monkeypatch):
    "A copy of data/checkpoints in a tmp data folder that TLCOURSE_DATA points at."
    from tlcourse.data import data_dir
    shutil.copytree(data_dir() / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path))
    return tmp_path / "checkpoints"


@pytest.fixture(scope="module")
def one_torch_thread():
    "Tiny networks: one thread is as fast, and avoids threads spin-waiting on a busy machine; restored afterwards."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
