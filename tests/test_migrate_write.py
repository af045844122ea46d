"""``symtrain migrate --write`` on a full disk or a read-only directory: one clear line, exit 2, no traceback,
and never a half-written file (both the backup and the file are written atomically)."""

from __future__ import annotations

import errno
import os

import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

import symtrain.atomic  # noqa: E402
from symtrain.cli import main  # noqa: E402

OLD = "import theano\nx = theano.shared(1.0)\n"


def _fail(code: int):
    def boom(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return boom


@pytest.mark.parametrize("where, code", [("fsync", errno.ENOSPC), ("replace", errno.EROFS)])
@pytest.mark.parametrize("backup", [True, False])
def test_write_failure_is_one_line_and_leaves_the_file_whole(
    tmp_path, capsys, monkeypatch, where, code, backup
):
    script = tmp_path / "train.py"
    script.write_text(OLD)
    monkeypatch.setattr(symtrain.atomic.os, where, _fail(code))
    rc = main(["migrate", "--write", *([] if backup else ["--no-backup"]), str(script)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and os.strerror(code) in lines[0] and "unchanged" in lines[0], err
    assert "Traceback" not in err
    assert script.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]  # no partial file, no half backup


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(OLD)
    tmp_path.chmod(0o555)
    try:
        assert main(["migrate", "--write", str(script)]) == 2
    finally:
        tmp_path.chmod(0o755)
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
    assert script.read_text() == OLD


def test_unreadable_file_is_reported_and_the_others_rewritten(tmp_path, capsys, monkeypatch):
    good, bad = tmp_path / "a.py", tmp_path / "b.py"
    good.write_text(OLD)
    bad.write_text(OLD)
    real = type(bad).read_bytes

    def read_bytes(self):
        if self.name == "b.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(type(bad), "read_bytes", read_bytes)
    assert main(["migrate", "--write", "--no-backup", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot read: Permission denied" in err and "Traceback" not in err
    assert "pytensor" in good.read_text() and bad.read_text() == OLD
