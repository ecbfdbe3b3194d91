"""Shared fixtures. The real trained fixture lives in ../shared (beside the checkout); tests that need it
skip with a clear reason on a fresh clone without it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
TINY = FIXTURES / "minicpm-tiny"
NEEDS_SHARED = pytest.mark.skipif(not TINY.is_dir(), reason=f"fixture checkpoint not found at {TINY} "
                                  "(CI has ../shared beside the checkout; a fresh clone does not)")


def _require_fixture():
    if not TINY.is_dir():
        pytest.skip(f"fixture checkpoint not found at {TINY} (../shared is not beside this checkout)")


@pytest.fixture(scope="session")
def reference():
    _require_fixture()
    ref = json.loads((FIXTURES / "minicpm-tiny.reference.json").read_text(encoding="utf-8"))
    logits = np.load(FIXTURES / "minicpm-tiny.reference_logits.npz")
    return ref, logits


def _export(tmp_path_factory, name, **recipe):
    _require_fixture()
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import Recipe
    out = tmp_path_factory.mktemp("pkg") / name
    export_checkpoint(TINY, out, recipe=Recipe(**recipe))
    return out


@pytest.fixture(scope="session")
def tiny_fp32(tmp_path_factory):
    return _export(tmp_path_factory, "tiny-fp32", precision="fp32")


@pytest.fixture(scope="session")
def tiny_int4(tmp_path_factory):
    """The tiny fixture exported with the base recipe (the bundled package's; the default plans on it)."""
    _require_fixture()
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import BASE_RECIPE, RECIPES
    out = tmp_path_factory.mktemp("pkg") / "tiny-int4"
    export_checkpoint(TINY, out, recipe=RECIPES[BASE_RECIPE])
    return out


@pytest.fixture(scope="session")
def fp32_model(tiny_fp32):
    from edge_llm.api import Model
    return Model.load(tiny_fp32, threads=1)


@pytest.fixture(scope="session")
def int4_model(tiny_int4):
    from edge_llm.api import Model
    return Model.load(tiny_int4, threads=1)
