"""Known answers for the atomic package folder (export/package.py) that tests/test_safety.py's signal
tests cannot show under a mutation tool (they signal the test process): the final swap when a rename
fails or a signal arrives, stale folders actually deleted (not only reported), an old package put back
before the rest is cleaned, and a live process of another user left alone. Written from the surviving
mutants of benchmarks/mutation/run_mutation.py."""
from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from edge_llm.errors import ExportError, Terminated
from edge_llm.export import package
from edge_llm.export.package import _swap, atomic_folder, clean_stale

DEAD = 99_999_999


def fake_package(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "edge-llm-package", "format_version": 2}))
    (folder / "tag").write_text(tag)
    return folder


def tag(folder: Path) -> str:
    return (folder / "tag").read_text()


def test_swap_replaces_and_leaves_nothing(tmp_path):
    target, new = fake_package(tmp_path / "pkg", "old"), fake_package(tmp_path / ".pkg.partial-1", "new")
    fake_package(tmp_path / f".pkg.old-{os.getpid()}", "leftover of an earlier swap by this pid")
    _swap(new, target)
    assert tag(target) == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.parametrize("existing", [True, False])
def test_swap_that_cannot_rename_keeps_the_old_package(tmp_path, monkeypatch, existing):
    target = fake_package(tmp_path / "pkg", "old") if existing else tmp_path / "pkg"
    new = fake_package(tmp_path / ".pkg.partial-1", "new")
    real = Path.rename

    def rename(self, dst):
        if self == new:
            raise OSError(18, "Invalid cross-device link")
        return real(self, dst)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(ExportError, match=r"^could not move the new package into .*pkg: Invalid cross-device link$"):
        _swap(new, target)
    assert (tag(target) == "old") if existing else not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["pkg"] if existing else [])


@pytest.mark.parametrize("signals, raises, message", [
    ({signal.SIGINT}, None, "edge-llm: Ctrl-C arrived during the final rename; the export had completed\n"),
    ({signal.SIGTERM}, Terminated, "edge-llm: SIGTERM arrived during the final rename; the export had completed\n"),
    (set(), None, ""),
])
def test_signals_during_the_swap_act_after_it(tmp_path, monkeypatch, capsys, signals, raises, message):
    @contextlib.contextmanager
    def deferred():
        yield set(signals)

    monkeypatch.setattr(package, "_deferred_signals", deferred)
    target, new = fake_package(tmp_path / "pkg", "old"), fake_package(tmp_path / ".pkg.partial-1", "new")
    if raises:
        with pytest.raises(Terminated) as info:
            _swap(new, target)
        assert info.value.signum == signal.SIGTERM
    else:
        _swap(new, target)
    assert tag(target) == "new"                                    # the swap completed either way
    assert capsys.readouterr().err == message


def test_stale_folders_are_deleted_and_an_old_package_put_back_first(tmp_path, capsys):
    target = tmp_path / "pkg"                                      # missing: a swap was killed half-way
    fake_package(tmp_path / f".pkg.old-{DEAD}", "old")
    partial = fake_package(tmp_path / f".pkg.partial-{DEAD}", "half-written but has a manifest")
    other = tmp_path / f".pkg.partial-{DEAD + 1}"
    other.mkdir()
    removed = clean_stale(target)
    assert tag(target) == "old"                                    # the old package, not the partial one
    assert sorted(removed) == sorted([partial, other]) and not partial.exists() and not other.exists()
    assert "restored" in capsys.readouterr().err


def test_a_live_process_of_another_user_keeps_its_folders(tmp_path, monkeypatch):
    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(package.os, "kill", kill)
    mine = fake_package(tmp_path / ".pkg.partial-4242", "someone else's export")
    assert clean_stale(tmp_path / "pkg") == [] and mine.exists()


def test_sigterm_raises_inside_an_export(tmp_path):
    with atomic_folder(tmp_path / "pkg", force=False) as tmp:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN)
        with pytest.raises(Terminated):
            handler(signal.SIGTERM, None)
        fake_package(tmp, "new")
    assert signal.getsignal(signal.SIGTERM) is not handler


def test_package_size_counts_every_file(tmp_path):
    fake_package(tmp_path / "pkg", "12345")
    (tmp_path / "pkg" / "sub").mkdir()
    (tmp_path / "pkg" / "sub" / "x.bin").write_bytes(bytes(100))
    want = sum(p.stat().st_size for p in (tmp_path / "pkg").rglob("*") if p.is_file())
    assert package.folder_bytes(tmp_path / "pkg") == want and want > 100
