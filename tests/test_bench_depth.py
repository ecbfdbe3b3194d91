"""`bench` depth runs report the context each decode test ended at, KV(context) and resident memory."""
from test_known_answers import DEPTHS, KV_PER_POSITION, TG, bench_report  # noqa: F401 (fixture)

from edge_llm.bench.report import render_markdown


def test_depth_runs_record_context_and_resident_memory(bench_report):
    tests = [t for t in bench_report["runs"][0]["tests"] if t["kind"] == "tg"]
    assert [t["depth"] for t in tests] == list(DEPTHS)
    for t in tests:
        last = t["reps"][-1]
        assert last["context_positions"] == max(t["depth"], 1) + TG
        assert last["rss_at_end_bytes"] and last["rss_at_end_bytes"] > 0
    md = render_markdown(bench_report)
    section = md.split("## Memory at depth")[1].split("##")[0]
    assert f"{KV_PER_POSITION:,} bytes per position" in section
    deepest = max(DEPTHS)
    kv_mib = (deepest + TG) * KV_PER_POSITION / 2**20
    assert f"| {deepest + TG} | {kv_mib:.1f} |" in section
