"""Huge pages for the loaded weights and the KV buffers (edge_llm.hugepages): contents unchanged, the switch
works, and on a kernel with MADV_COLLAPSE the pages really become 2 MiB ones."""
import mmap
import sys

import numpy as np
import pytest

from edge_llm import hugepages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@linux
def test_collapse_keeps_contents_and_makes_huge_pages(monkeypatch):
    monkeypatch.delenv("EDGE_LLM_HUGEPAGES", raising=False)
    buf = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    a = np.frombuffer(buf, np.float32)
    a[:] = np.arange(a.size, dtype=np.float32)          # written, so resident as 4 KiB pages
    before = hugepages.anon_huge_bytes() or 0
    done = hugepages.collapse_loaded(min_bytes=32 << 20)
    if done == 0:
        pytest.skip("this kernel collapses nothing (no MADV_COLLAPSE, or no free huge pages)")
    assert (hugepages.anon_huge_bytes() or 0) - before >= 32 << 20
    np.testing.assert_array_equal(a, np.arange(a.size, dtype=np.float32))


@linux
def test_off_switch_and_background_thread(monkeypatch):
    hugepages.wait()                                    # sessions loaded by earlier tests
    monkeypatch.setenv("EDGE_LLM_HUGEPAGES", "0")
    assert not hugepages.enabled() and hugepages.collapse_loaded() == 0
    hugepages.collapse_in_background()
    assert not hugepages._threads                       # nothing started when off
    monkeypatch.setenv("EDGE_LLM_HUGEPAGES", "1")
    calls = []
    monkeypatch.setattr(hugepages, "collapse_loaded", lambda: calls.append(1))
    hugepages.collapse_in_background()
    hugepages.wait(10)
    assert calls == [1] and not hugepages._threads


def test_a_session_still_decodes_the_same_with_and_without(monkeypatch, tmp_path):
    """The session's collapse changes pages, never values: greedy ids equal with it off and on."""
    from edge_llm.api import Model
    from edge_llm.paths import BUNDLED
    out = {}
    for mode in ("0", "sync"):
        monkeypatch.setenv("EDGE_LLM_HUGEPAGES", mode)
        m = Model.load(BUNDLED, threads=1, speculate="off")
        out[mode] = [r.token_id for r in m.stream("The sea", max_new_tokens=12, ignore_eos=True)]
    assert out["0"] == out["sync"]
