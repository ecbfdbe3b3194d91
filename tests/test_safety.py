"""Data safety of `edge-llm export` (issue 11): --force replaces only an edge-llm package, never the
checkpoint or anything else; signals during the export or the swap leave the old package or the new
one, whole, and no debris; stale temporary folders are cleaned; one export per target at a time."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_llm.cli import main
from edge_llm.errors import ExportError, Terminated
from edge_llm.export import package
from edge_llm.export.package import atomic_folder, clean_stale, is_package

# a tiny transformers-made Llama checkpoint from tests/data: these run on a fresh clone, without ../shared
TINY = Path(__file__).parent / "data" / "tiny-families" / "llama"


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below `folder` (folders as 'dir'), to prove nothing changed."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def debris(parent: Path) -> list[str]:
    """Temporary folders and lock files an export leaves beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and
                  (".partial-" in p.name or ".old-" in p.name or p.name.endswith(".lock")))


def export(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(main, ["export", *map(str, args)])


def one_line_error(result, *needles) -> None:
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith("edge-llm: error:"), err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, err


def fake_package(folder: Path, tag: str, *, format_version=1) -> Path:
    """A folder that says it is an edge-llm package (what --force may replace), with one tagged file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "edge-llm-package", "format_version": format_version}))
    (folder / "model.onnx.data").write_text(tag)
    return folder


@pytest.fixture
def ckpt(tmp_path):
    """A writable copy of the tiny checkpoint inside tmp_path/work (so its parent holds only it)."""
    if not TINY.is_dir():
        pytest.skip(f"fixture checkpoint not found at {TINY}")
    dst = tmp_path / "work" / "ckpt"
    shutil.copytree(TINY, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


# ---------------------------------------------------------------- what --force may replace

def test_force_onto_the_checkpoint_keeps_every_byte(ckpt):
    before = snapshot(ckpt.parent)
    one_line_error(export(ckpt, "-o", ckpt, "--force"), "is the checkpoint folder")
    assert snapshot(ckpt.parent) == before


@pytest.mark.parametrize("force", [False, True])
def test_output_inside_the_checkpoint_is_refused(ckpt, force):
    before = snapshot(ckpt.parent)
    one_line_error(export(ckpt, "-o", ckpt / "pkg", *(["--force"] if force else [])), "is inside the checkpoint folder")
    assert snapshot(ckpt.parent) == before


def test_force_onto_a_folder_containing_the_checkpoint(ckpt):
    (ckpt.parent / "notes.txt").write_text("mine")
    before = snapshot(ckpt.parent.parent)
    one_line_error(export(ckpt, "-o", ckpt.parent, "--force"), "contains the checkpoint folder")
    assert snapshot(ckpt.parent.parent) == before


def test_force_through_a_symlink_to_the_checkpoint(ckpt):
    link = ckpt.parent / "link"
    link.symlink_to(ckpt)
    before = snapshot(ckpt)
    one_line_error(export(ckpt, "-o", link, "--force"), "checkpoint folder")
    assert snapshot(ckpt) == before and link.is_symlink()


@pytest.mark.parametrize("make, needle", [
    (lambda d: (d.mkdir(), (d / "thesis.tex").write_text("years of work")), "is not an edge-llm package"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"format": "some-other-tool"}')), "is not an edge-llm package"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text("not json")), "is not an edge-llm package"),
    (lambda d: d.write_text("a file"), "is not a folder"),
    (lambda d: (fake_package(d.parent / "real", "x"), d.symlink_to(d.parent / "real")), "symbolic link"),
], ids=["unrelated-files", "other-manifest", "broken-manifest", "a-file", "symlink-to-package"])
def test_force_onto_something_that_is_not_a_package(ckpt, make, needle):
    target = ckpt.parent / "out"
    make(target)
    before = snapshot(ckpt.parent)
    one_line_error(export(ckpt, "-o", target, "--force", "--no-validate"), needle)
    assert snapshot(ckpt.parent) == before


def test_existing_package_without_force(ckpt):
    target = fake_package(ckpt.parent / "pkg", "old")
    before = snapshot(ckpt.parent)
    one_line_error(export(ckpt, "-o", target), "already exists; pass --force")
    assert snapshot(ckpt.parent) == before


@pytest.mark.parametrize("format_version", [1, 999])
def test_force_replaces_a_real_package(ckpt, tiny_int4, format_version):
    target = ckpt.parent / "pkg"
    shutil.copytree(tiny_int4, target)
    m = json.loads((target / "manifest.json").read_text())
    m["format_version"] = format_version          # any format_version of an edge-llm package may be replaced
    (target / "manifest.json").write_text(json.dumps(m))
    (target / "stale-extra-file").write_text("from the old package")
    r = export(ckpt, "-o", target, "--force", "--no-validate")
    assert r.exit_code == 0, r.output
    assert not (target / "stale-extra-file").exists(), "the old package is replaced whole"
    assert is_package(target) and (target / "model.onnx.data").stat().st_size > 1000
    assert debris(ckpt.parent) == []


def test_is_package():
    assert not is_package(Path("/nonexistent"))


# ---------------------------------------------------------------- signals

class Unhandled(Exception):
    pass


@pytest.fixture
def signal_guard():
    """If atomic_folder ever stops handling SIGINT/SIGTERM itself, the signal fails the test with
    Unhandled instead of killing or interrupting pytest."""
    def guard(signum, frame):
        raise Unhandled(f"signal {signum} reached the previous handler")

    previous = {s: signal.signal(s, guard) for s in (signal.SIGINT, signal.SIGTERM)}
    yield guard
    for s, h in previous.items():
        signal.signal(s, h)


def test_sigterm_while_building_cleans_up_and_keeps_the_old_package(tmp_path, signal_guard):
    target = fake_package(tmp_path / "pkg", "old")
    with pytest.raises(Terminated):
        with atomic_folder(target, force=True) as tmp:
            (tmp / "model.onnx.data").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)                                   # the handler raises before this ends
    assert (target / "model.onnx.data").read_text() == "old"
    assert debris(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal_guard, "the previous handler is restored"


def _signal_inside_the_swap(monkeypatch, signum) -> None:
    """Deliver `signum` exactly between 'old package aside' and 'new package in place'."""
    real_rename = Path.rename

    def rename(self, dst):
        if Path(dst).name.startswith(".pkg.old-"):
            os.kill(os.getpid(), signum)
        return real_rename(self, dst)

    monkeypatch.setattr(Path, "rename", rename)


def test_sigint_during_the_swap_is_deferred(tmp_path, monkeypatch, capsys, signal_guard):
    target = fake_package(tmp_path / "pkg", "old")
    _signal_inside_the_swap(monkeypatch, signal.SIGINT)
    with atomic_folder(target, force=True) as tmp:
        fake_package(tmp, "new")
    assert (target / "model.onnx.data").read_text() == "new", "the new package is in place, whole"
    assert debris(tmp_path) == []
    err = capsys.readouterr().err
    assert "the export had completed" in err and "interrupted" not in err


def test_sigterm_during_the_swap_acts_after_it(tmp_path, monkeypatch, signal_guard):
    target = fake_package(tmp_path / "pkg", "old")
    _signal_inside_the_swap(monkeypatch, signal.SIGTERM)
    with pytest.raises(Terminated):
        with atomic_folder(target, force=True) as tmp:
            fake_package(tmp, "new")
    assert (target / "model.onnx.data").read_text() == "new", "the new package is in place, whole"
    assert debris(tmp_path) == []


# A CLI export that pauses with its package fully built in the temporary folder, just before the
# swap, and tells the test so; the test then signals it.
PAUSED = textwrap.dedent("""
    import contextlib, signal, sys, time
    from pathlib import Path
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if the test runner ignores SIGINT
    from edge_llm.export import exporter, package
    real = package.atomic_folder

    @contextlib.contextmanager
    def paused(target, **kw):
        with real(target, **kw) as tmp:
            yield tmp
            Path(sys.argv[1]).write_text("built")
            time.sleep(120)

    exporter.atomic_folder = paused
    from edge_llm.cli import main
    main(sys.argv[2:], prog_name="edge-llm")
""")


def _paused_export(tmp_path, ckpt, target) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "built"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(marker), "export", str(ckpt), "-o", str(target),
                             "--force", "--no-validate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the export never reached the swap: {proc.communicate()}")
        time.sleep(0.05)
    partial = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.partial-")]
    assert partial, "the package is being built beside the target"
    return proc, marker


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_export_keeps_the_old_package_and_no_debris(tmp_path, ckpt, signum, code, word):
    target = fake_package(ckpt.parent / "pkg", "old")
    proc, _ = _paused_export(tmp_path, ckpt, target)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"edge-llm: {word}" and "Traceback" not in err
    assert (target / "model.onnx.data").read_text() == "old"
    assert debris(ckpt.parent) == []


def test_sigkill_debris_is_cleaned_by_the_next_export(tmp_path, ckpt):
    target = fake_package(ckpt.parent / "pkg", "old")
    proc, _ = _paused_export(tmp_path, ckpt, target)
    proc.kill()
    proc.communicate(timeout=60)
    left = debris(ckpt.parent)
    assert left == [".pkg.lock", f".pkg.partial-{proc.pid}"], left   # the flock died with the process, not the files
    r = export(ckpt, "-o", target, "--force", "--no-validate")
    assert r.exit_code == 0, r.output
    assert debris(ckpt.parent) == [] and is_package(target)


# ---------------------------------------------------------------- stale folders and the lock

def test_stale_folders_of_dead_exports_are_removed(tmp_path):
    target = fake_package(tmp_path / "pkg", "old")
    dead = [tmp_path / ".pkg.partial-99999999", tmp_path / ".pkg.old-99999999"]
    alive = tmp_path / f".pkg.partial-{os.getppid()}"                 # a running process: not ours to remove
    others = [tmp_path / ".other.partial-99999999", tmp_path / ".pkg.partial-99999999x", tmp_path / "pkg.partial-99999999"]
    for d in dead + [alive] + others:
        d.mkdir()
        (d / "f").write_text("x")
    removed = clean_stale(target)
    assert sorted(removed) == sorted(dead)
    assert all(d.exists() for d in [alive] + others)
    assert (target / "model.onnx.data").read_text() == "old"


def test_a_package_left_aside_by_a_killed_swap_is_put_back(tmp_path, capsys):
    """Killed (SIGKILL) between 'old aside' and 'new in place': the target is missing and the old
    package sits in .NAME.old-PID. The next export restores it rather than deleting it."""
    fake_package(tmp_path / ".pkg.old-99999999", "old")
    target = tmp_path / "pkg"
    with pytest.raises(ExportError, match="already exists; pass --force"):
        with atomic_folder(target, force=False):
            pass
    assert (target / "model.onnx.data").read_text() == "old"
    assert "restored" in capsys.readouterr().err
    assert debris(tmp_path) == []


def test_a_held_lock_refuses_a_second_export(tmp_path):
    target = fake_package(tmp_path / "pkg", "old")
    lock = tmp_path / ".pkg.lock"
    with open(lock, "w") as f:
        f.write("4242\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ExportError, match=r"another export to pkg is running \(pid 4242\)"):
            with atomic_folder(target, force=True) as tmp:
                fake_package(tmp, "never")
        assert (target / "model.onnx.data").read_text() == "old"
        assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    lock.unlink()
    with atomic_folder(target, force=True) as tmp:                   # free again: works, leaves no lock file
        fake_package(tmp, "new")
    assert (target / "model.onnx.data").read_text() == "new" and debris(tmp_path) == []


def test_a_held_lock_refuses_on_the_command_line(ckpt):
    lock = ckpt.parent / ".pkg.lock"
    with open(lock, "w") as f:
        f.write(f"{os.getpid()}\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_line_error(export(ckpt, "-o", ckpt.parent / "pkg", "--no-validate"),
                       f"another export to pkg is running (pid {os.getpid()})")
    assert not (ckpt.parent / "pkg").exists()


def test_lock_file_replaced_while_waiting_is_not_trusted(tmp_path, monkeypatch):
    """The holder unlinks the lock file when done; a process that opened the old file must not treat
    its lock on the unlinked inode as the lock (two exporters could then both run)."""
    target = tmp_path / "pkg"
    lock = tmp_path / ".pkg.lock"
    calls = {"n": 0}
    real_flock = fcntl.flock

    def flock(fd, op):
        calls["n"] += 1
        if calls["n"] == 1:                    # after our open(): the file is replaced under us
            lock.unlink()
            lock.write_text("other\n")
        return real_flock(fd, op)

    monkeypatch.setattr(package.fcntl, "flock", flock)
    with package._target_lock(target):
        assert lock.read_text().strip() == str(os.getpid())
    assert calls["n"] == 2 and not lock.exists()
