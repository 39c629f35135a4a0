"""Outputs appear whole or not at all."""

from pathlib import Path

import pytest

from accel.errors import AccelError
from accel.outputs import staged_dir, staged_file


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


@pytest.mark.parametrize("target", [".", "..", "/", "~"])
def test_dangerous_outputs_are_refused(tmp_path, monkeypatch, target):
    (tmp_path / "home" / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "home" / "work")
    (tmp_path / "home" / "work" / "keep").write_text("x")
    path = Path(target).expanduser()
    with pytest.raises(AccelError, match="refusing to replace"), staged_dir(path, replace=True):
        raise AssertionError("never reached")
    assert (tmp_path / "home" / "work" / "keep").read_text() == "x"


def test_a_symlink_to_a_parent_is_refused(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (tmp_path / "work" / "up").symlink_to(tmp_path)
    with pytest.raises(AccelError, match="parent of the working directory"):
        with staged_dir(Path("up"), replace=True):
            pass


def test_replacing_a_file_output(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with staged_dir(out, replace=True) as tmp:
        (tmp / "f").write_text("f")
    assert (out / "f").read_text() == "f"


def test_staged_file_refuses_its_input_and_keeps_the_old_file(tmp_path):
    src, out = tmp_path / "x.npy", tmp_path / "y.npy"
    src.write_text("in")
    out.write_text("old")
    with pytest.raises(AccelError, match="input file"), staged_file(src, inputs=[src]):
        pass
    with pytest.raises(AccelError, match="exists"), staged_file(out):
        pass
    with pytest.raises(RuntimeError), staged_file(out, replace=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "x.npy",
        "y.npy",
    ]
    with staged_file(out, replace=True) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
