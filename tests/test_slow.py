"""Heavy checks, deselected by default (`python -m pytest -m slow`): real-width export and aarch64 emulation."""
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_2b_width_export_two_layers(tmp_path):
    """The MiniCPM-2B shape (122,753 x 2304 tied table, 36 heads) with 2 layers: export, load, generate."""
    from edge_llm.api import Model
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import DEFAULT_RECIPE, RECIPES
    from edge_llm.export.synth import write_synthetic
    ckpt = tmp_path / "ckpt"
    write_synthetic(ckpt, shape="minicpm-2b", layers=2)
    result = export_checkpoint(ckpt, tmp_path / "pkg", recipe=RECIPES[DEFAULT_RECIPE])
    assert result.package_bytes / result.source_bytes < 0.28
    model = Model.load(tmp_path / "pkg", threads=2, context_length=64)
    recs = list(model.stream("你好，MiniCPM", max_new_tokens=4, ignore_eos=True))
    assert len(recs) == 4


@pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None and shutil.which("apt-get") is None,
                    reason="needs qemu-user-static (or apt-get to install it)")
def test_aarch64_emulated_runtime():
    r = subprocess.run([str(ROOT / "benchmarks/arm/run_emulated.sh")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
