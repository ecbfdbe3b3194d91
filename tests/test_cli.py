"""The CLI as scripts use it: one-shot chat and generate in a pipe, and one-line errors."""
import subprocess
import sys

CLI = [sys.executable, "-m", "edge_llm.cli"]


def run(*args, stdin=None):
    return subprocess.run(CLI + list(args), input=stdin, capture_output=True, text=True, timeout=120)


def test_chat_one_shot_prints_only_the_reply():
    r = run("chat", "--prompt", "Quote John 3:16.", "--temperature", "0", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "<用户>" not in r.stdout and "you>" not in r.stdout


def test_chat_prompt_from_stdin_is_deterministic_with_seed():
    a = run("chat", "--prompt", "-", "--seed", "7", "--temperature", "0.8", "--max-new-tokens", "12", stdin="请背诵李白的《静夜思》。")
    b = run("chat", "--prompt", "-", "--seed", "7", "--temperature", "0.8", "--max-new-tokens", "12", stdin="请背诵李白的《静夜思》。")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.strip()


def test_generate_continues_plain_text():
    r = run("generate", "--prompt", "In the beginning God created", "--temperature", "0", "--max-new-tokens", "8",
            "--stats")
    assert r.returncode == 0 and r.stdout.strip()
    assert "tok/s" in r.stderr


def test_missing_package_is_one_line_error():
    r = run("chat", "/nonexistent/pkg", "--prompt", "hi")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "/nonexistent/pkg" in r.stderr


def test_repl_in_a_pipe_is_multi_turn_with_commands():
    r = run("chat", "--temperature", "0", "--max-new-tokens", "6", stdin="Quote John 3:16.\n/reset\nhello\n/exit\nignored\n")
    assert r.returncode == 0, r.stderr
    replies = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2, r.stdout          # one reply per user line, nothing after /exit
    assert "conversation cleared" in r.stderr and "you>" not in r.stdout


def test_install_hints_work_from_a_checkout(monkeypatch):
    """edge-llm is not on the package index: a hint `pip install 'edge-llm[x]'` would install whatever
    someone registers under that name. Hints say `pip install -e '.[x]'` in the checkout."""
    from pathlib import Path

    from click.testing import CliRunner

    from edge_llm.cli import main
    root = Path(__file__).resolve().parents[1]
    for f in [*(root / "edge_llm").rglob("*.py"), *(root / "export").rglob("*.py")]:
        assert "'edge-llm[" not in f.read_text(encoding="utf-8"), f
    monkeypatch.setitem(sys.modules, "uvicorn", None)       # the serve extra is missing
    r = CliRunner().invoke(main, ["serve"])
    assert r.exit_code == 1 and "pip install -e '.[serve]' in the edge-llm checkout" in r.stderr, r.output
