"""Outputs appear whole or not at all."""

import pytest

from accel.errors import AccelError
from accel.outputs import staged_dir


def test_refuses_a_directory_with_content(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine").write_text("x")
    with (
        pytest.raises(AccelError, match="not an empty directory; hint"),
        staged_dir(tmp_path / "out", hint="; hint"),
    ):
        pass
    assert (tmp_path / "out" / "mine").read_text() == "x"


def test_replace_happens_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(out, replace=True) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in out.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
    with staged_dir(out, replace=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]


def test_an_empty_directory_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("f")
    assert (tmp_path / "out" / "f").exists()
