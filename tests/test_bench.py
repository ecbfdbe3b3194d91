"""`edge-llm bench` end to end on the tiny fixture package: report schema, raw repetitions, energy
labels, interruption, and which reports `bench compare` accepts. `tiny_int4` comes from conftest.py."""
import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_llm.bench import runner as bench_runner
from edge_llm.bench.report import SCHEMA, SCHEMA_VERSION, ReportError, compare_reports, render_markdown
from edge_llm.cli import main
from edge_llm.metering.energy import find_energy_counters, select_counters

TOP_LEVEL = {"schema", "schema_version", "created", "command", "interrupted", "machine", "package", "settings",
             "energy", "cost_settings", "runs", "bandwidth", "notes", "cost_example", "load_average"}


@pytest.fixture(scope="module")
def fast_run(tiny_int4, tmp_path_factory):
    out = tmp_path_factory.mktemp("fast")
    args = ["bench", str(tiny_int4), "--fast", "--threads", "1,2", "-d", "0,4", "--bandwidth-mib", "8",
            "--json", str(out / "out.json"), "--markdown", str(out / "out.md"), "--plots", str(out / "plots")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "out.json").read_text()), (out / "out.md").read_text(), out


def test_report_schema_and_every_repetition(fast_run):
    report, md, _ = fast_run
    assert TOP_LEVEL <= set(report)
    assert (report["schema"], report["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert report["interrupted"] is False
    assert report["command"][:2] == ["edge-llm", "bench"] and "--fast" in report["command"]
    assert [r["threads"] for r in report["runs"]] == [1, 2]
    s = report["settings"]
    for run in report["runs"]:
        assert run["load_seconds"] > 0 and run["memory"]["peak_rss_bytes"] > 0
        assert [t["test"] for t in run["tests"]] == ["pp16", "tg8", "tg8 @ d4"]
        for t in run["tests"]:
            assert len(t["reps"]) == s["reps"] and len(t["warmup_reps"]) == s["warmup"]
            assert t["tokens_per_s"]["n"] == s["reps"]
            if t["kind"] == "tg":
                assert all(len(r["step_seconds"]) == s["tg"] for r in t["reps"] + t["warmup_reps"])
                assert set(t["itl_ms"]) >= {"p50", "p90", "p99"}
                assert t["efficiency"]["fraction"] > 0
            else:
                assert t["ttft_ms"]["mean"] == pytest.approx(t["reps"][0]["seconds"] * 1e3)
    pkg = report["package"]
    assert pkg["compression"] == pytest.approx(pkg["source_weights_bytes"] / pkg["package_bytes"])
    assert report["bandwidth"]["best_bytes_per_s"] > 0
    assert report["cost_example"]["tokens_per_currency"] == pytest.approx(1.971e6)
    assert "| pp16 | 1 |" in md and "| tg8 @ d4 | 2 |" in md


def test_energy_is_labelled_estimated_without_a_counter(fast_run):
    report, md, _ = fast_run
    if select_counters(find_energy_counters()):
        pytest.skip("this machine exposes a readable energy counter")
    assert report["energy"]["measured"] is False and report["energy"]["model"]
    labels = {t["energy_per_token"]["label"] for run in report["runs"] for t in run["tests"]}
    assert labels == {"estimated"}
    assert "## Energy (*estimated*)" in md and "*est.*" in md


def test_measured_energy_from_a_counter_root(tiny_int4, tmp_path):
    domain = tmp_path / "sys/class/powercap/intel-rapl:0"
    domain.mkdir(parents=True)
    (domain / "name").write_text("package-0\n")
    (domain / "energy_uj").write_text("1000000\n")
    report = bench_runner.run_bench(tiny_int4, pp=(4,), tg=2, reps=1, warmup=0, bandwidth_mib=0,
                                    energy_root=tmp_path, idle_seconds=0.01, command=["test"])
    assert report["energy"]["measured"] is True and report["energy"]["counters"] == ["RAPL package-0"]
    assert {t["energy_per_token"]["label"] for t in report["runs"][0]["tests"]} == {"measured"}
    assert report["runs"][0]["energy_source"].startswith("measured")
    assert "*estimated*" not in render_markdown(report)


def test_plots_or_a_note(fast_run):
    report, _, out = fast_run
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("matplotlib is not installed" in n for n in report["notes"])
    else:
        assert {p.name for p in (out / "plots").glob("*.png")} == {"tps_vs_depth.png", "tps_vs_threads.png"}


def test_interrupt_keeps_what_was_measured(tiny_int4, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_runner, "_measure_tg", interrupted)  # after the pp measurements
    result = CliRunner().invoke(main, ["bench", str(tiny_int4), "--fast", "--bandwidth-mib", "0",
                                       "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert result.exit_code == 130, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True
    pp, tg = report["runs"][0]["tests"]
    assert len(pp["reps"]) == 1 and pp["tokens_per_s"]["mean"] > 0
    assert tg["reps"] == [] and tg["tokens_per_s"] is None
    assert "Interrupted" in (tmp_path / "r.md").read_text()


def test_settings_that_do_not_fit_are_one_line_errors(tiny_int4):
    result = CliRunner().invoke(main, ["bench", str(tiny_int4), "--fast", "-d", "100000"])
    assert result.exit_code == 1
    assert "exceeds the model's context" in result.output and "Traceback" not in result.output


def _variant(report: dict, path: Path, edit) -> Path:
    other = copy.deepcopy(report)
    edit(other)
    path.write_text(json.dumps(other))
    return path


def test_compare_accepts_compatible_reports(fast_run, tmp_path):
    report, _, out = fast_run
    b = _variant(report, tmp_path / "arm-board.json", lambda r: r["machine"].update(architecture="aarch64"))
    table = compare_reports([out / "out.json", b])
    rows = [line for line in table.splitlines() if line.startswith("| out") or line.startswith("| arm-board")]
    assert len(rows) == 4  # two reports x two thread counts
    assert "aarch64" in table and "TTFT pp16 ms" in table
    result = CliRunner().invoke(main, ["bench", "compare", str(out / "out.json"), str(b),
                                       "--markdown", str(tmp_path / "cmp.md")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp.md").read_text() == table


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
    (lambda r: r["package"]["shape"].update(num_layers=40), "different model shape (num_layers 8 vs 40)"),
    (lambda r: r["settings"].update(tg=128), "different test settings (tg 8 vs 128)"),
])
def test_compare_refuses_incompatible_reports(fast_run, tmp_path, edit, reason):
    report, _, out = fast_run
    b = _variant(report, tmp_path / "b.json", edit)
    with pytest.raises(ReportError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        compare_reports([out / "out.json", b])
    result = CliRunner().invoke(main, ["bench", "compare", str(out / "out.json"), str(b)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and reason in result.output
