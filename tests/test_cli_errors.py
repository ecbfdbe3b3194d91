"""Bad input at the CLI edge (issue 11): every bad value is one line on stderr and a non-zero exit,
never a traceback; chat survives a bad line; eval shows progress and keeps partial results."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, NEEDS_SHARED

from edge_llm import cli
from edge_llm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, input=None, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, prog_name="edge-llm", **kw)


def assert_one_line(r, code: int, *needles: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    err = r.stderr
    assert err.count("\n") == 1 and err.startswith("edge-llm: "), err
    assert "Traceback" not in r.output
    for n in needles:
        assert n in err, err
    return err


# ---------------------------------------------------------------- values checked before anything loads

@pytest.mark.parametrize("args, needle", [
    (["--temperature", "-1"], "'--temperature'"),
    (["--temperature", "nan"], "not a finite number"),
    (["--temperature", "inf"], "not a finite number"),
    (["--top-p", "2"], "'--top-p'"),
    (["--top-p", "0"], "'--top-p'"),
    (["--top-k", "-5"], "'--top-k'"),
    (["--min-p", "2"], "'--min-p'"),
    (["--min-p", "1"], "'--min-p'"),
    (["--repetition-penalty", "0"], "'--repetition-penalty'"),
    (["--seed", "-1"], "'--seed'"),
    (["--context", "-5"], "'--context'"),
    (["--context", "0"], "'--context'"),
    (["--max-new-tokens", "0"], "'--max-new-tokens'"),
    (["--threads", "0"], "'--threads'"),
    (["--threads", "-2"], "'--threads'"),
    (["--threads", "1000"], "physical core"),
    (["--threads", "two"], "'--threads'"),
])
@pytest.mark.parametrize("command", ["chat", "generate"])
def test_sampling_values_are_checked_at_the_edge(command, args, needle, monkeypatch):
    def never(*a, **k):
        raise AssertionError("a bad value must be refused before the model loads")

    monkeypatch.setattr(cli, "_load", never)
    r = invoke(command, "--prompt", "hi", *args)
    assert_one_line(r, 2, needle, f"edge-llm {command} --help")


def test_threads_limit_is_twice_the_physical_cores(monkeypatch):
    from edge_llm import session
    monkeypatch.setattr(session, "physical_cores", lambda: 3)
    monkeypatch.setattr(cli, "_load", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    assert_one_line(invoke("chat", "--prompt", "hi", "--threads", "7"), 2, "7 threads on 3 physical core(s): use 1..6")


@pytest.mark.parametrize("args, needle", [
    (["--block-size", "48"], "'--block-size'"),
    (["--target", "arm", "--block-size", "256"], "at most 128"),
    (["--accuracy-level", "9"], "'--accuracy-level'"),
    (["--precision", "int3"], "'--precision'"),
])
def test_export_values(tmp_path, args, needle):
    r = invoke("export", tmp_path, "-o", tmp_path / "pkg", *args)
    assert_one_line(r, 2, needle)
    assert not (tmp_path / "pkg").exists()


def test_missing_argument_is_one_line():
    assert_one_line(invoke("export"), 2, "Missing argument")


def test_invalid_utf8_argument_is_one_line():
    r = subprocess.run([sys.executable, "-m", "edge_llm.cli", "chat", "--prompt", b"caf\xe9"],
                       capture_output=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode() == "edge-llm: error: argument 'caf\\xe9' is not valid UTF-8 (text and file names must be)\n"


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_invalid_utf8_on_stdin_is_one_line(command):
    r = invoke(command, "--prompt", "-", input=b"ok \xff\xfe")
    assert_one_line(r, 1, "stdin is not valid UTF-8 (byte 0xff at offset 3)")


def test_internal_errors_are_one_line_unless_debug(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "_load", boom)
    r = invoke("chat", "--prompt", "hi")
    assert_one_line(r, 70, "edge-llm: internal error: RuntimeError: boom second line (run with --debug")
    r = invoke("--debug", "chat", "--prompt", "hi")
    assert isinstance(r.exception, RuntimeError)


# ---------------------------------------------------------------- chat keeps going

def test_chat_pipe_survives_bad_lines(monkeypatch):
    long = "word " * 400
    r = invoke("chat", "--context", "128", "--temperature", "0", "--max-new-tokens", "4",
               input="hello\n" + long + "\n/foo\n//slash\n/exit\nnever read\n")
    assert r.exit_code == 1, r.output                                 # some turns failed: exit 1 at the end
    err = r.stderr.splitlines()
    assert any("edge-llm: error: the prompt is" in e and "the context holds 128" in e for e in err), err
    assert "edge-llm: unknown command /foo; /reset, /exit (start a message with // to send a leading /)" in err
    assert "Traceback" not in r.output
    assert len([line for line in r.stdout.splitlines() if line.strip()]) >= 2, r.stdout   # hello and //slash


def test_chat_pipe_invalid_utf8_line_is_skipped():
    r = CliRunner().invoke(main, ["chat", "--temperature", "0", "--max-new-tokens", "3"],
                           input=b"\xff\xfe\nhello\n")
    assert r.exit_code == 1
    assert "edge-llm: error: line 1 is not valid UTF-8 (byte 0xff at offset 0); skipped" in r.stderr
    assert r.stdout.strip(), "the next line was answered"


def test_unknown_command_never_reaches_the_model(monkeypatch):
    from edge_llm import api
    sent = []
    monkeypatch.setattr(api.Conversation, "send", lambda self, text, **kw: sent.append(text) or iter(()))
    r = invoke("chat", input="/foo\n/help\n/usr/bin is a folder\n//x\n")
    assert r.exit_code == 0, r.output
    assert sent == ["/usr/bin is a folder", "/x"]
    assert r.stderr.count("unknown command") == 2


def test_tty_chat_loads_readline(monkeypatch):
    from edge_llm import chat

    class TTY:
        def isatty(self):
            return True

    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr(chat.sys, "stdin", TTY())
    monkeypatch.setattr("builtins.input", eof)
    monkeypatch.delitem(sys.modules, "readline", raising=False)

    class Model:
        class manifest:
            path = Path("x")

    monkeypatch.setattr(chat, "Conversation", lambda model, **kw: None)
    assert chat.repl(Model(), params=None, max_new_tokens=1, stats=False) == 0
    assert "readline" in sys.modules


# ---------------------------------------------------------------- export output

@NEEDS_SHARED
def test_fp32_summary_and_progress_reach_100_percent(tmp_path):
    from conftest import TINY
    r = invoke("export", TINY, "-o", tmp_path / "fp32", "--precision", "fp32", "--no-validate")
    assert r.exit_code == 0, r.output
    assert "× the source size" in r.stdout and "-" not in r.stdout.split("package", 1)[1].split("\n")[0]
    assert r.stdout.startswith("exported "), "the summary starts on its own line"
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("tensors: ") and "(100%)" in last, r.stderr


def test_progress_finishes_even_if_the_count_falls_short(capsys):
    p = cli.Progress("tensors")
    for i in range(1, 58):                              # 57 calls for 74 tensors
        p(f"t{i}", i, 74)
    p.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "tensors: 74/74 (100%) done"
    assert len(lines) == 8                              # 10%, 20%, … 70%, and the final line


def test_relative_size_never_says_negative():
    from edge_llm.export.cli_support import _relative_size
    assert _relative_size(200, 100) == "2.00× the source size"
    assert _relative_size(275, 1000) == "27.5% of the source, 72.5% smaller"


# ---------------------------------------------------------------- bench

def test_plots_without_matplotlib_fail_before_running(tmp_path, monkeypatch):
    from edge_llm.bench import runner
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: pytest.fail("ran the benchmark"))
    assert_one_line(invoke("bench", "--fast", "--plots", tmp_path / "plots"), 1, "--plots needs matplotlib")


@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_bench_output_folder_must_exist(tmp_path, monkeypatch, option):
    from edge_llm.bench import runner
    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: pytest.fail("ran the benchmark"))
    assert_one_line(invoke("bench", "--fast", option, tmp_path / "a" / "b" / "c.json"), 1, "does not exist")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("args, needle", [
    (["--threads", "0"], "'--threads'"), (["--threads", "1,1000"], "physical core"), (["-p", "0"], "'-p'"),
    (["-n", "0"], "'-n'"), (["-r", "0"], "'-r'"), (["-d", "-1"], "'-d'"), (["--duty-cycle", "0"], "'--duty-cycle'"),
    (["--cpu-watts", "-3"], "'--cpu-watts'"), (["--price-per-kwh", "nan"], "finite"),
])
def test_bench_values(args, needle):
    assert_one_line(invoke("bench", "--fast", *args), 2, needle)


def _report(**drop) -> dict:
    """The smallest report `bench compare` accepts."""
    r = {"schema": "edge-llm-bench", "schema_version": 1, "machine": {"architecture": "x86_64"},
         "package": {"shape": {"architecture": "MiniCPMForCausalLM", "num_layers": 8, "hidden_size": 384},
                     "quantization": {"precision": "int4", "block_size": 128}},
         "settings": {"pp": [16], "tg": 8, "depths": [0]}, "energy": {"measured": False},
         "runs": [{"threads": 1, "tests": [{"test": "pp16", "tokens_per_s": {"mean": 10.0, "std": 1.0}}]}]}
    return r


@pytest.mark.parametrize("path, field", [
    (("settings", "tg"), "settings.tg"), (("machine",), "machine"), (("package", "shape", "num_layers"),
                                                                       "package.shape.num_layers"),
    (("energy", "measured"), "energy.measured"), (("runs", 0, "tests"), "runs.0.tests"),
    (("runs", 0, "tests", 0, "test"), "runs.0.tests.0.test"),
])
def test_compare_names_the_missing_field(tmp_path, path, field):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_report()))
    r = invoke("bench", "compare", good)
    assert r.exit_code == 0 and "| good |" in r.stdout, r.output
    bad_report = _report()
    obj = bad_report
    for key in path[:-1]:
        obj = obj[key]
    del obj[path[-1]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_report))
    assert_one_line(invoke("bench", "compare", good, bad), 1, str(bad), f"missing field '{field}'")


def test_compare_malformed_value_is_one_line(tmp_path):
    r = _report()
    r["runs"][0]["tests"][0]["tokens_per_s"] = {"mean": "fast"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(r))
    assert_one_line(invoke("bench", "compare", bad), 1, str(bad), "malformed bench report")


# ---------------------------------------------------------------- eval

TEXT = FIXTURES / "corpus-valid.txt"


@pytest.mark.parametrize("args, code, needle", [
    (["--window", "0"], 2, "'--window'"),
    (["--window", "4096"], 1, "--window 4096 exceeds the model's context of 2048 tokens"),
    (["--max-tokens", "100"], 2, "'--max-tokens': 100 is less than one window of 512"),
    (["--max-tokens", "0"], 2, "'--max-tokens'"),
])
@NEEDS_SHARED
def test_eval_values(tiny_int4, args, code, needle):
    assert_one_line(invoke("eval", tiny_int4, "--text", TEXT, *args), code, needle)


@NEEDS_SHARED
def test_eval_shows_progress_and_keeps_partial_results_on_ctrl_c(tiny_int4, tmp_path, monkeypatch):
    from edge_llm import evaluate
    real, calls = evaluate._log_softmax, {"n": 0}

    def interrupt_third(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(evaluate, "_log_softmax", interrupt_third)
    out = tmp_path / "e.json"
    r = invoke("eval", tiny_int4, "--text", TEXT, "--window", "64", "--max-tokens", "640", "--json", out)
    assert r.exit_code == 130, r.output
    data = json.loads(out.read_text())
    assert data["partial"] is True and data["tokens_scored"] == 128 and data["windows_planned"] == 10
    assert "eval: window 1/10" in r.stderr and "tok/s" in r.stderr and "ETA" in r.stderr
    assert "interrupted after 128 tokens" in r.stderr
    assert "| 128 |" in r.stdout


@NEEDS_SHARED
def test_eval_library_names_max_tokens(int4_model):
    from edge_llm.errors import EdgeLLMError
    from edge_llm.evaluate import evaluate
    with pytest.raises(EdgeLLMError, match=r"max_tokens 100 \(--max-tokens\) is less than one window of 512"):
        evaluate(int4_model, TEXT, max_tokens=100)


def test_eval_default_is_a_few_minutes():
    from edge_llm.evaluate import DEFAULT_MAX_TOKENS
    assert DEFAULT_MAX_TOKENS <= 60_000       # measured ~700 tok/s with a reference on 2 cores: under 2 min


# ---------------------------------------------------------------- module layout and wheels

def test_no_import_cycle_between_cli_and_commands():
    code = ("import sys, edge_llm.serve.cli, edge_llm.bench.cli, edge_llm.eval_cli; "
            "assert 'edge_llm.cli' not in sys.modules, 'importing the commands imported cli'; "
            "from edge_llm.paths import BUNDLED; assert (BUNDLED / 'manifest.json').is_file()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert {"bench", "eval", "export", "chat", "generate", "synth"} <= set(main.commands)


def test_wheel_ships_the_data_files(tmp_path):
    """Built from a copy of the tree (no build/ or egg-info debris in the checkout); the calibration
    text and the 2B tokenizer must be inside the wheel and found from its layout."""
    import shutil
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edge_llm", "export"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip("no index to fetch setuptools for the isolated build")
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("edge_llm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("edge_llm/data/calibration.txt", "edge_llm/data/minicpm-2b-tokenizer/tokenizer.model",
              "edge_llm/bundled/minicpm-tiny-int4/manifest.json", "edge_llm/paths.py"):
        assert f in names, f
    sources = {str(p.relative_to(src)).replace("export/", "edge_llm/export/", 1)
               for p in list((src / "edge_llm").rglob("*.py")) + list((src / "export").rglob("*.py"))}
    assert sources <= names, f"modules missing from the wheel: {sorted(sources - names)}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import edge_llm, edge_llm.export.calibrate as c, edge_llm.export.synth as s; "
            f"assert edge_llm.__file__.startswith({str(site)!r}), edge_llm.__file__; "
            "assert c.DEFAULT_CALIBRATION.is_file() and (s.TOKENIZER_2B / 'tokenizer.model').is_file(); "
            f"assert str(c.DEFAULT_CALIBRATION).startswith({str(site)!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(site)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
@NEEDS_SHARED
def test_bad_input_table_has_no_traceback_loss_or_debris(tmp_path):
    """benchmarks/bad_input.py runs every case of docs/bad-input.md (about a minute) and exits 1 on any
    traceback, lost file, debris or unexpected exit code."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bad_input.py"), "--out", str(tmp_path / "t.md")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 tracebacks, 0 with lost files, 0 with debris, 0 with any problem" in (tmp_path / "t.md").read_text()
