"""The bad-input table (issue 11): run every bad-input case through the real CLI and write what happens.

    python benchmarks/bad_input.py                      # writes docs/bad-input.md
    python benchmarks/bad_input.py --out - --only export # print a subset

Each case runs `edge-llm` in a fresh process inside a scratch folder holding a copy of the trained
fixture checkpoint (`ckpt`), its int4 export (`pkg`) and a few more files. Around every case the
script hashes every file of the scratch folder: a file that existed before and is gone or changed
afterwards (beyond what the case is meant to change) is a *lost file*; a leftover `.NAME.partial-PID`,
`.NAME.old-PID` or `.NAME.lock` is *debris*; any "Traceback" on stderr is a *traceback*. The script
exits 1 if any case has one of them or an exit code other than the one listed.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
DEBRIS = re.compile(r"\.[^/]+\.(partial|old)-[0-9]+|\.[^/]+\.lock")
LONG = "word " * 400


@dataclass
class Case:
    group: str
    what: str
    shell: str                           # the command as a user types it (cwd = scratch folder)
    expect: int
    argv: list | None = None             # edge-llm arguments when they differ from shell.split()
    stdin: bytes | None = None
    setup: Callable[[Path], None] | None = None
    run: Callable[[Path, "Case"], subprocess.CompletedProcess] | None = None   # custom driver (signals)
    changes: tuple[str, ...] = ()        # paths (prefixes) the case is meant to change
    python: str | None = None            # run `python -c python` instead of the CLI module


def edge(args: list, *, cwd: Path, stdin: bytes | None = None, python: str | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", python] if python else [sys.executable, "-m", "edge_llm.cli"]
    return subprocess.run(cmd + list(args), cwd=cwd, input=stdin, capture_output=True, timeout=timeout)


def start(args: list, *, cwd: Path) -> subprocess.Popen:
    # signal.default_int_handler: SIGINT must act even if this script was started with SIGINT ignored
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from edge_llm.cli import main; main(sys.argv[1:], prog_name='edge-llm')")
    return subprocess.Popen([sys.executable, "-c", code] + list(args), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the command ended before the signal could be sent")
        time.sleep(0.02)


def writing_weights(scratch: Path, name: str) -> Callable[[], bool]:
    """True once an export to `name` is writing its weights into its temporary folder."""
    return lambda: any((p / "model.onnx.data").exists() for p in scratch.glob(f".{name}.partial-*"))


def signalled_export(signum: int, name: str):
    def run(scratch: Path, case: Case) -> subprocess.CompletedProcess:
        proc = start(["export", "ckpt", "-o", name, "--force"], cwd=scratch)
        wait_for(writing_weights(scratch, name), proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return run


def killed_then_rerun(scratch: Path, case: Case) -> subprocess.CompletedProcess:
    proc = start(["export", "ckpt", "-o", "pkg6", "--force"], cwd=scratch)
    wait_for(writing_weights(scratch, "pkg6"), proc)
    proc.kill()
    proc.communicate(timeout=60)
    left = sorted(re.sub(r"-[0-9]+$", "-PID", p.name) for p in scratch.iterdir() if DEBRIS.fullmatch(p.name))
    r = edge(["export", "ckpt", "-o", "pkg6", "--force", "--no-validate"], cwd=scratch)
    r.stderr = f"after kill -9: {', '.join(left) or 'nothing'} left\n".encode() + r.stderr
    return r


def held_lock(scratch: Path, case: Case) -> subprocess.CompletedProcess:
    lock = scratch / ".pkg4.lock"
    with open(lock, "w") as f:
        f.write("4242\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = edge(["export", "ckpt", "-o", "pkg4", "--no-validate"], cwd=scratch)
    lock.unlink()                    # the lock of the (simulated) other export, not debris of this one
    return r


def interrupted_eval(scratch: Path, case: Case) -> subprocess.CompletedProcess:
    proc = start(["eval", "pkg", "--text", str(FIXTURES / "corpus-valid.txt"), "--json", "e.json"], cwd=scratch)
    buf = b""
    while b"eval: window 1/" not in buf:          # progress lines arrive on stderr as windows finish
        chunk = proc.stderr.readline()
        if not chunk:
            break
        buf += chunk
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    data = json.loads((scratch / "e.json").read_text()) if (scratch / "e.json").exists() else {}
    note = f"e.json: partial={data.get('partial')}, tokens_scored={data.get('tokens_scored')}\n"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, buf + err + note.encode())


def port_in_use(scratch: Path, case: Case) -> subprocess.CompletedProcess:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = edge(["serve", "pkg", "--port", str(port)], cwd=scratch, timeout=120)
    r.stderr = r.stderr.replace(str(port).encode(), b"8080")
    return r


def signalled_serve(signum: int):
    """serve with a streaming and a plain request running (replies to the context, seconds), then the
    signal: what each client got is added to the message."""
    def run(scratch: Path, case: Case) -> subprocess.CompletedProcess:
        import threading
        import urllib.error
        import urllib.request
        proc = start(["serve", "pkg", "--port", "0", "--threads", "1", "--max-tokens", "0", "--log-level", "warning"],
                     cwd=scratch)
        err = b""
        while b"chat page:" not in err:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("serve ended before it listened: " + err.decode())
            err += line
        port = int(re.search(rb"127\.0\.0\.1:(\d+)/", err).group(1))
        url = f"http://127.0.0.1:{port}"
        got = {}

        def ask(stream: bool) -> None:
            # eos banned, no chat stop strings: the reply runs to the context's end (seconds)
            body = json.dumps({"prompt": "In the beginning", "max_tokens": 5000, "temperature": 0,
                               "logit_bias": {"2": -100}, "stream": stream}).encode()
            req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    lines = [ln.strip() for ln in r.read().decode().splitlines() if ln.strip()]
                    got["stream"] = f"stream: {r.status}, ends {' '.join(x[:60] for x in lines[-2:])}"
            except urllib.error.HTTPError as e:
                got["plain"] = f"plain: {e.code} {e.read().decode()}"

        clients = [threading.Thread(target=ask, args=(s,)) for s in (False, True)]
        for c in clients:
            c.start()
        wait_for(lambda: json.loads(urllib.request.urlopen(url + "/health").read())["running"] >= 2, proc)
        proc.send_signal(signum)
        out, rest = proc.communicate(timeout=120)
        for c in clients:
            c.join(60)
        note = f"clients got: {got.get('plain')}; {got.get('stream')}\n".encode()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err.replace(str(port).encode(), b"PORT")
                                           + rest + note)
    return run


# ---------------------------------------------------------------- scratch folder contents

def make_scratch(scratch: Path) -> None:
    shutil.copytree(FIXTURES / "minicpm-tiny", scratch / "ckpt")
    for p in (scratch / "ckpt").iterdir():
        p.chmod(0o644)
    r = edge(["export", "ckpt", "-o", "pkg"], cwd=scratch)
    if r.returncode:
        raise SystemExit(f"could not export the fixture: {r.stderr.decode()}")
    (scratch / "notes").mkdir()
    (scratch / "notes" / "thesis.tex").write_text("years of work\n")
    (scratch / "notes.txt").write_text("a file\n")
    (scratch / "short.txt").write_text("just a few words\n")
    (scratch / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (scratch / "not-json.json").write_text("{")


def copy_pkg(name: str) -> Callable[[Path], None]:
    return lambda s: shutil.copytree(s / "pkg", s / name)


def stale(name: str) -> Callable[[Path], None]:
    def setup(s: Path) -> None:
        for kind in ("partial", "old"):
            d = s / f".{name}.{kind}-99999999"
            d.mkdir()
            (d / "model.onnx.data").write_bytes(b"half-written")
    return setup


def bad_tokenizer(s: Path) -> None:
    shutil.copytree(s / "ckpt", s / "ckpt-badtok")
    (s / "ckpt-badtok" / "tokenizer.model").write_bytes(os.urandom(4096))


def overlapping_safetensors(s: Path) -> None:
    """A small safetensors checkpoint whose second tensor's data_offsets overlap the first's."""
    from edge_llm.export.synth import write_synthetic
    shape = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 8192}
    d = write_synthetic(s / "ckpt-overlap", shape=shape, weight_format="safetensors", tokenizer_dir=s / "ckpt")
    path = d / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    names = [k for k in header if k != "__metadata__"]
    a, b = header[names[0]]["data_offsets"], header[names[1]]["data_offsets"]
    size = b[1] - b[0]
    header[names[1]]["data_offsets"] = [a[0], a[0] + size]          # overlaps tensor 0, leaves a gap
    new = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(raw[:8] + new + b" " * (n - len(new)) + raw[8 + n:])


def truncated_data(s: Path) -> None:
    shutil.copytree(s / "pkg", s / "pkg-trunc")
    f = s / "pkg-trunc" / "model.onnx.data"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)


def zeroed_data(s: Path) -> None:
    shutil.copytree(s / "pkg", s / "pkg-zero")
    f = s / "pkg-zero" / "model.onnx.data"
    f.write_bytes(bytes(f.stat().st_size))


def report_missing_field(s: Path) -> None:
    report = {"schema": "edge-llm-bench", "schema_version": 1, "machine": {"architecture": "x86_64"},
              "package": {"shape": {"architecture": "MiniCPMForCausalLM", "num_layers": 8, "hidden_size": 384},
                          "quantization": {"precision": "int4", "block_size": 128}},
              "settings": {"pp": [16], "depths": [0]}, "energy": {"measured": False}, "runs": []}
    (s / "r.json").write_text(json.dumps(report))


NO_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "
                 "from edge_llm.cli import main; main(sys.argv[1:], prog_name='edge-llm')")


def cases() -> list[Case]:
    c = []
    # -- export: what --force may touch, signals, stale folders, the lock
    c += [
        Case("export", "-o is the checkpoint, --force", "edge-llm export ckpt -o ckpt --force", 1),
        Case("export", "-o is the checkpoint's parent, --force", "edge-llm export ckpt -o . --force", 1),
        Case("export", "-o inside the checkpoint (no --force)", "edge-llm export ckpt -o ckpt/pkg", 1),
        Case("export", "-o a folder of unrelated files, --force", "edge-llm export ckpt -o notes --force", 1),
        Case("export", "-o an existing file, --force", "edge-llm export ckpt -o notes.txt --force", 1),
        Case("export", "-o an existing package, no --force", "edge-llm export ckpt -o pkg", 1),
        Case("export", "-o an existing package, --force (allowed)", "edge-llm export ckpt -o pkg2 --force",
             0, setup=copy_pkg("pkg2"), changes=("pkg2",)),
        Case("export", "stale .pkg3.partial-/.old-99999999 of a dead export", "edge-llm export ckpt -o pkg3 --force",
             0, setup=lambda s: (copy_pkg("pkg3")(s), stale("pkg3")(s)), changes=("pkg3", ".pkg3.")),
        Case("export", "another export holds .pkg4.lock", "edge-llm export ckpt -o pkg4 --no-validate", 1,
             run=held_lock),
        Case("export", "Ctrl-C (SIGINT) while writing weights, --force over a package",
             "edge-llm export ckpt -o pkg5 --force   # SIGINT mid-export", 130, setup=copy_pkg("pkg5"),
             run=signalled_export(signal.SIGINT, "pkg5")),
        Case("export", "SIGTERM while writing weights, --force over a package",
             "edge-llm export ckpt -o pkg5 --force   # SIGTERM mid-export", 143,
             setup=lambda s: None if (s / "pkg5").exists() else copy_pkg("pkg5")(s),
             run=signalled_export(signal.SIGTERM, "pkg5")),
        Case("export", "kill -9 mid-export, then export again", "edge-llm export ckpt -o pkg6 --force   # after kill -9",
             0, setup=copy_pkg("pkg6"), run=killed_then_rerun, changes=("pkg6", ".pkg6.")),
        Case("export", "a killed swap left the old package in .pkg7.old-99999999, pkg7 missing",
             "edge-llm export ckpt -o pkg7", 1, changes=("pkg7", ".pkg7."),
             setup=lambda s: shutil.copytree(s / "pkg", s / ".pkg7.old-99999999")),
        Case("export", "checkpoint folder missing", "edge-llm export nope -o out", 1),
        Case("export", "unknown recipe", "edge-llm export ckpt -o out --recipe nope", 1),
        Case("export", "block size not offered", "edge-llm export ckpt -o out --block-size 48", 2),
        Case("export", "--target arm with a block above 128", "edge-llm export ckpt -o out --target arm --block-size 256", 2),
        Case("export", "--calibration file missing", "edge-llm export ckpt -o out --recipe gptq-asym-b128 --calibration none.txt", 2),
        Case("export", "tokenizer.model of random bytes", "edge-llm export ckpt-badtok -o out-badtok", 1,
             setup=bad_tokenizer, changes=("ckpt-badtok", "out-badtok")),
        Case("export", "safetensors data_offsets overlap / leave gaps", "edge-llm export ckpt-overlap -o out-overlap", 1,
             setup=overlapping_safetensors, changes=("ckpt-overlap", "out-overlap")),
    ]
    # -- chat / generate values
    for flag, value in [("--temperature", "-1"), ("--temperature", "nan"), ("--top-p", "2"), ("--top-k", "-5"),
                        ("--min-p", "2"), ("--repetition-penalty", "0"), ("--seed", "-1"), ("--context", "-5"),
                        ("--max-new-tokens", "0"), ("--threads", "1000"), ("--threads", "0"), ("--threads", "-2")]:
        c.append(Case("chat", f"{flag} {value}", f"edge-llm chat pkg --prompt hi {flag} {value}", 2))
    c += [
        Case("chat", "invalid UTF-8 in an argument", "edge-llm chat pkg --prompt $'caf\\xe9'", 2,
             argv=["chat", "pkg", "--prompt", b"caf\xe9"]),
        Case("chat", "invalid UTF-8 on stdin", "printf 'caf\\xe9' | edge-llm chat pkg --prompt -", 1,
             argv=["chat", "pkg", "--prompt", "-"], stdin=b"caf\xe9"),
        Case("generate", "invalid UTF-8 on stdin", "printf 'caf\\xe9' | edge-llm generate pkg --prompt -", 1,
             argv=["generate", "pkg", "--prompt", "-"], stdin=b"caf\xe9"),
        Case("chat", "a message longer than the context, in a pipe (next line still answered)",
             "printf 'hello\\n<2000 chars>\\nbye\\n' | edge-llm chat pkg --context 128 --temperature 0", 1,
             argv=["chat", "pkg", "--context", "128", "--temperature", "0", "--max-new-tokens", "8"],
             stdin=f"hello\n{LONG}\nbye\n".encode()),
        Case("chat", "a line of invalid UTF-8 in a pipe", "printf '\\xff\\nhello\\n' | edge-llm chat pkg", 1,
             argv=["chat", "pkg", "--max-new-tokens", "8"], stdin=b"\xff\nhello\n"),
        Case("chat", "unknown /command", "printf '/foo\\n' | edge-llm chat pkg", 0,
             argv=["chat", "pkg"], stdin=b"/foo\n"),
        Case("chat", "package folder missing", "edge-llm chat nope --prompt hi", 1),
        Case("chat", "a checkpoint instead of a package", "edge-llm chat ckpt --prompt hi", 1),
        Case("chat", "model.onnx.data truncated", "edge-llm chat pkg-trunc --prompt hi", 1, setup=truncated_data,
             changes=("pkg-trunc",)),
        Case("chat", "model.onnx.data zeroed (sizes right)", "edge-llm chat pkg-zero --prompt hi", 1,
             setup=zeroed_data, changes=("pkg-zero",)),
    ]
    # -- eval
    text = str(FIXTURES / "corpus-valid.txt")
    c += [
        Case("eval", "--window 0", "edge-llm eval pkg --text corpus-valid.txt --window 0", 2,
             argv=["eval", "pkg", "--text", text, "--window", "0"]),
        Case("eval", "--window above the context", "edge-llm eval pkg --text corpus-valid.txt --window 4096", 1,
             argv=["eval", "pkg", "--text", text, "--window", "4096"]),
        Case("eval", "--max-tokens below one window", "edge-llm eval pkg --text corpus-valid.txt --max-tokens 100", 2,
             argv=["eval", "pkg", "--text", text, "--max-tokens", "100"]),
        Case("eval", "text shorter than one window", "edge-llm eval pkg --text short.txt", 1),
        Case("eval", "text not UTF-8", "edge-llm eval pkg --text latin1.txt", 1),
        Case("eval", "--json into a missing folder", "edge-llm eval pkg --text short.txt --json no/such/e.json", 1),
        Case("eval", "Ctrl-C after the first window", "edge-llm eval pkg --text corpus-valid.txt --json e.json   # SIGINT",
             130, run=interrupted_eval, changes=("e.json",)),
    ]
    # -- bench
    c += [
        Case("bench", "--plots without matplotlib", "edge-llm bench pkg --fast --plots plots   # matplotlib missing", 1,
             argv=["bench", "pkg", "--fast", "--plots", "plots"], python=NO_MATPLOTLIB),
        Case("bench", "--json into a missing folder", "edge-llm bench pkg --fast --json a/b/c.json", 1),
        Case("bench", "--threads 1000", "edge-llm bench pkg --fast --threads 1000", 2),
        Case("bench", "depth beyond the context", "edge-llm bench pkg --fast -d 100000", 1),
        Case("bench", "compare: right schema, missing field", "edge-llm bench compare r.json", 1,
             setup=report_missing_field, changes=("r.json",)),
        Case("bench", "compare: not JSON", "edge-llm bench compare not-json.json", 1),
    ]
    # -- serve (port 0: any free port, so the cases never meet a server already on 8080)
    c += [
        Case("serve", "--threads 1000", "edge-llm serve pkg --port 0 --threads 1000", 2),
        Case("serve", "--max-tokens -1", "edge-llm serve pkg --port 0 --max-tokens -1", 2),
        Case("serve", "--port 70000", "edge-llm serve pkg --port 70000", 2),
        Case("serve", "port already in use", "edge-llm serve pkg --port 8080   # 8080 in use", 1, run=port_in_use),
        Case("serve", "package folder missing", "edge-llm serve nope --port 0", 1),
        Case("serve", "--host that does not resolve", "edge-llm serve pkg --host no.such.host.invalid --port 0", 1),
        Case("serve", "Ctrl-C with a plain and a streaming request running",
             "edge-llm serve pkg --max-tokens 0   # SIGINT mid-reply", 130, run=signalled_serve(signal.SIGINT)),
        Case("serve", "SIGTERM with a plain and a streaming request running",
             "edge-llm serve pkg --max-tokens 0   # SIGTERM mid-reply", 143, run=signalled_serve(signal.SIGTERM)),
        Case("cli", "unknown command", "edge-llm frobnicate", 2),
    ]
    return c


# ---------------------------------------------------------------- running and checking

def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Outcome:
    case: Case
    code: int
    message: str
    seconds: float
    problems: list[str] = field(default_factory=list)


def run_case(scratch: Path, case: Case) -> Outcome:
    if case.setup:
        case.setup(scratch)
    before = snapshot(scratch)
    t0 = time.perf_counter()
    if case.run:
        r = case.run(scratch, case)
    else:
        argv = case.argv or case.shell.split()[1:]
        r = edge(argv, cwd=scratch, stdin=case.stdin, python=case.python)
    seconds = time.perf_counter() - t0
    err = r.stderr.decode("utf-8", "backslashreplace").replace(str(scratch), "<scratch>")
    after = snapshot(scratch)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    shown = [ln for ln in lines if ln.startswith(("edge-llm:", "after kill", "e.json:", "clients got:"))] or lines[-1:]
    problems = []
    if "Traceback" in err:
        problems.append("traceback")
    lost = [p for p in before if (p not in after or after[p] != before[p]) and not p.startswith(case.changes or ("\0",))]
    if lost:
        problems.append(f"lost/changed: {', '.join(sorted(lost)[:3])}")
    debris = [p.name for p in scratch.iterdir() if DEBRIS.fullmatch(p.name)]
    if debris:
        problems.append(f"debris: {', '.join(debris)}")
    if r.returncode != case.expect:
        problems.append(f"exit {r.returncode}, expected {case.expect}")
    if r.returncode in (1, 2, 70) and len([ln for ln in lines if ln.startswith(("edge-llm: error:",
                                                                                 "edge-llm: internal error:"))]) != 1:
        problems.append("not one error line")
    if r.returncode == 0:
        out = r.stdout.decode("utf-8", "backslashreplace").strip().splitlines()
        shown = [ln for ln in lines if ln.startswith(("edge-llm:", "after kill"))] + ([f"(stdout) {out[0]}"] if out else [])
    return Outcome(case, r.returncode, " / ".join(shown), seconds, problems)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(outcomes: list[Outcome]) -> str:
    n = len(outcomes)
    tb = sum("traceback" in " ".join(o.problems) for o in outcomes)
    lost = sum(any(p.startswith("lost") for p in o.problems) for o in outcomes)
    debris = sum(any(p.startswith("debris") for p in o.problems) for o in outcomes)
    out = ["# Bad input: what each case does", "",
           "Generated by `python benchmarks/bad_input.py` (do not edit by hand). Every case runs the real CLI in a",
           "fresh process in a scratch folder holding `ckpt` (a copy of the trained fixture checkpoint), `pkg` (its",
           "int4 export) and the files named in the command. *Lost* means a file that existed before the case was",
           "gone or changed afterwards (other than the case's own output); *debris* means a leftover",
           "`.NAME.partial-PID`, `.NAME.old-PID` or `.NAME.lock`.", "",
           "Exit codes: 0 ok · 1 error in the input or environment (one line) · 2 bad usage or value (one line) · "
           "70 internal error (a bug; one line, traceback with `--debug`) · 130 Ctrl-C · 141 stdout closed "
           "(`| head`, quietly) · 143 SIGTERM.", "",
           "Decisions: `--force` replaces only a folder whose manifest.json says `\"format\": \"edge-llm-package\"`, "
           "and never the checkpoint, a folder containing it or one inside it (refused even without `--force`). "
           "`--threads` above twice the physical cores is refused, not clamped: a typo should be loud, and 1000 "
           "threads made a 1 s reply take minutes. In a pipe, `chat` reports a line it cannot answer on stderr, "
           "goes on with the next line and exits 1 at the end; in a terminal it just goes on. "
           "Ctrl-C or SIGTERM during an export's final swap is acted on after it: the new package is whole and "
           "\"interrupted\" is only said when the old package is what remains. `serve` binds its port before "
           "the model loads (a port in use is one line, exit 1, no banner); on Ctrl-C or SIGTERM it ends every "
           "running request with an OpenAI error object (a stream: an error event, then `[DONE]`) and exits "
           "with one line.", "",
           f"**{n} cases: {tb} tracebacks, {lost} with lost files, {debris} with debris, "
           f"{sum(bool(o.problems) for o in outcomes)} with any problem.**", "",
           "| # | area | case | command | exit | message (stderr) | checks |", "|---:|---|---|---|---:|---|---|"]
    for i, o in enumerate(outcomes, 1):
        out.append(f"| {i} | {o.case.group} | {_cell(o.case.what)} | `{_cell(o.case.shell)}` | {o.code} "
                   f"| {_cell(o.message)} | {'ok' if not o.problems else '**' + _cell('; '.join(o.problems)) + '**'} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "bad-input.md"), help="Markdown file, or - for stdout")
    ap.add_argument("--only", default=None, help="Run only the cases of this area (export, chat, eval, bench ...)")
    a = ap.parse_args()
    if not (FIXTURES / "minicpm-tiny").is_dir():
        print(f"needs the fixture checkpoint at {FIXTURES / 'minicpm-tiny'}", file=sys.stderr)
        return 1
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="edge-llm-bad-input-") as tmp:
        scratch = Path(tmp)
        make_scratch(scratch)
        for case in cases():
            if a.only and case.group != a.only:
                continue
            o = run_case(scratch, case)
            outcomes.append(o)
            print(f"{o.code:>3} {'ok ' if not o.problems else 'BAD'} {o.seconds:5.1f}s {case.shell}"
                  + (f"   [{'; '.join(o.problems)}]" if o.problems else ""), file=sys.stderr)
    text = render(outcomes)
    if a.out == "-":
        sys.stdout.write(text)
    else:
        Path(a.out).write_text(text, encoding="utf-8")
        print(f"wrote {a.out}", file=sys.stderr)
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
