"""Atomic writes: a failed write leaves what the user saved untouched."""

import os
import stat

import pytest

from nlhf_envs.atomic import atomic_open, atomic_write_text


def test_success_replaces_with_0644(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert os.listdir(target.parent) == ["a.txt"]


def test_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"saved")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(target, "wb") as fh:
            fh.write(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"saved"
    assert os.listdir(tmp_path) == ["ckpt.bin"]
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_open(target, "a"):
            pass
