"""The export summary's probe line says what its number means and gives a verdict (issue 23: SmolLM2's
'top-1 agreement 25.0% (16-token probe)' read as a broken export)."""
import pytest

from edge_llm.export.cli_support import validation_lines, wilson


def test_probe_line_gives_counts_an_interval_and_a_verdict():
    ok = "\n".join(validation_lines({"max_abs_diff": 3.1, "top1_agreement": 0.25}, "int4"))   # SmolLM2's
    assert "top-1 agreement 4/16 (10%-49% at 95%)" in ok and "ok: the package follows" in ok
    assert "edge-llm eval" in ok and "WARNING" not in ok
    bad = "\n".join(validation_lines({"max_abs_diff": 40.0, "top1_agreement": 1 / 16}, "int4"))
    assert "WARNING: 1 of 16 probe tokens agree" in bad
    fp32 = "\n".join(validation_lines({"max_abs_diff": 1e-4, "top1_agreement": 1.0}, "fp32"))
    assert "16/16" in fp32 and "within 1e-3" in fp32


def test_wilson_interval_known_values():
    assert wilson(4, 16) == pytest.approx((0.1018, 0.4950), abs=1e-4)
    assert wilson(0, 16)[0] == 0.0 and wilson(16, 16)[1] == 1.0
