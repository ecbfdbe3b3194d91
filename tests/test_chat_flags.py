"""What llama.cpp users reach for in `chat`: a system prompt, short flags (-p -n -c -t -s as llama-cli
reads them), a reply separator for pipes, and Ctrl-C at an empty prompt quitting."""
import os
import select
import sys
import time

import pytest
from click.testing import CliRunner

import edge_llm
from edge_llm.api import Conversation
from edge_llm.cli import main
from edge_llm.sampling import SamplingParams

SYSTEM = "You are a dictionary."
ASK = 'What does "lantern" mean?'


def invoke(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, prog_name="edge-llm")


@pytest.fixture(scope="module")
def model():
    return edge_llm.load(threads=1)


def greedy(model, messages, n):
    return "".join(r.text for r in model.chat(messages, params=SamplingParams(), max_new_tokens=n))


def test_system_prompt_reaches_the_model_and_survives_reset(model):
    r = invoke("chat", "--system", SYSTEM, "-p", ASK, "-n", "30", "--temperature", "0", "-t", "1")
    assert r.exit_code == 0, r.output
    with_system = greedy(model, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}], 30)
    assert r.stdout == with_system + "\n"
    assert with_system != greedy(model, [{"role": "user", "content": ASK}], 30)   # so the check means something
    r = invoke("chat", "-sys", SYSTEM, "-t", "1", "-n", "30", "--temperature", "0", input=f"hi\n/reset\n{ASK}\n")
    assert r.exit_code == 0 and r.stdout.endswith(with_system + "\n"), r.output
    conv = Conversation(model, system=SYSTEM)
    conv.reset()
    assert conv.messages == [{"role": "system", "content": SYSTEM}]


def test_short_flags_mean_what_llama_cli_means():
    long = invoke("chat", "--prompt", "hi", "--max-new-tokens", "6", "--seed", "3", "--context", "64",
                  "--threads", "1", "--temperature", "0.9")
    short = invoke("chat", "-p", "hi", "-n", "6", "-s", "3", "-c", "64", "-t", "1", "--temperature", "0.9")
    assert long.exit_code == short.exit_code == 0 and long.stdout == short.stdout
    assert invoke("chat", "-p", "hi", "-t", "1000").exit_code == 2           # -t is --threads, checked
    assert "'-c' / '--context'" in invoke("chat", "-p", "hi", "-c", "0").stderr
    g = invoke("generate", "-p", "In the beginning", "-n", "4", "-t", "1", "--temperature", "0")
    assert g.exit_code == 0 and g.stdout.strip()


def test_separator_splits_replies_that_contain_newlines(model):
    questions = ["Quote John 3:16.", ASK, "请背诵李白的《静夜思》。"]
    r = invoke("chat", "--separator", r"\0", "-n", "40", "--temperature", "0", "-t", "1",
               input="".join(q + "\n" for q in questions))
    assert r.exit_code == 0, r.output
    replies = r.stdout.split("\0")
    assert replies[-1] == "" and len(replies) == len(questions) + 1
    conv = Conversation(model)
    want = ["".join(x.text for x in conv.send(q, params=SamplingParams(), max_new_tokens=40)) for q in questions]
    assert replies[:-1] == want
    assert any("\n" in w for w in want)          # a newline separator could not have split these
    default = invoke("chat", "-n", "40", "--temperature", "0", "-t", "1", input="".join(q + "\n" for q in questions))
    assert default.stdout == "".join(w + "\n" for w in want)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pseudo-terminal (Linux)")
def test_ctrl_c_at_an_empty_prompt_quits_and_with_text_clears_the_line():
    import pty
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: edge-llm chat on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "edge_llm", "chat", "-t", "1", "-n", "5"])

    def read(wait=0.1) -> bytes:
        if not select.select([fd], [], [], wait)[0]:
            return b""
        try:
            return os.read(fd, 4096)
        except OSError:                            # the child closed the terminal
            return b""

    def read_until(needle: bytes, timeout=60.0) -> bytes:
        buf, deadline = b"", time.monotonic() + timeout
        while needle not in buf:
            assert time.monotonic() < deadline, buf
            buf += read()
        return buf

    try:
        read_until(b"you> ")
        os.write(fd, b"abc")
        time.sleep(0.5)                            # as a person types: readline has the text first
        os.write(fd, b"\x03")                      # text typed: Ctrl-C clears it, the chat goes on
        read_until(b"you> ")
        time.sleep(0.3)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        os.write(fd, b"\x03")                      # empty prompt: Ctrl-C quits
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "chat did not quit on Ctrl-C at an empty prompt"
            read()
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
