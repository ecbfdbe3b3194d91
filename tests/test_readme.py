"""The README shows what its commands print: the chat transcript is the output of the command above it
(scripts/readme_transcript.py regenerates both), and the bundled package's size is the measured one."""
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_transcript", ROOT / "scripts" / "readme_transcript.py")
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)


def test_readme_transcript_is_what_its_command_prints():
    readme = rt.README.read_text(encoding="utf-8")
    questions, args = rt.questions_and_args(readme)
    block = rt.BLOCK.search(readme).group(2)
    # the command exactly as the README gives it (newline after each reply)
    r = subprocess.run([sys.executable, "-m", "edge_llm", "chat", *args], input="".join(q + "\n" for q in questions),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    shown = block.split("you> ")[1:]
    assert [s.split("\nai> ", 1)[0] for s in shown] == questions
    assert "".join(s.split("\nai> ", 1)[1] for s in shown) == r.stdout, \
        "README.md's transcript is stale: run python scripts/readme_transcript.py"
    assert args == shlex.split("--temperature 0 --max-new-tokens 60")


def test_readme_package_size_is_measured():
    assert f"`minicpm-tiny`, {rt.package_mb()}," in rt.README.read_text(encoding="utf-8")
