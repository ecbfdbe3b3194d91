"""Hypothesis settings shared by tests/test_fuzz_*.py.

The default suite runs each property on a small, bounded number of examples (all fuzz tests together
take well under 30 s on 2 cores). `benchmarks/fuzz/run_fuzz.py` sets EDGE_LLM_FUZZ=campaign to run
many more, freshly random, with a per-example deadline (a slow example is reported as a hang); the
mutation runner sets EDGE_LLM_FUZZ=mutation for a few deterministic examples.
"""
from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, reject, settings

MODE = os.environ.get("EDGE_LLM_FUZZ", "suite")
_SCALE = {"suite": 1.0, "mutation": 0.3, "campaign": float(os.environ.get("EDGE_LLM_FUZZ_SCALE", "40"))}[MODE]
DEADLINE = timedelta(seconds=float(os.environ.get("EDGE_LLM_FUZZ_DEADLINE", "2"))) if MODE == "campaign" else None


def fuzz(examples: int) -> settings:
    """`examples` in the default suite; scaled for the campaign and the mutation runs."""
    return settings(max_examples=max(1, int(examples * _SCALE)), deadline=DEADLINE, database=None,
                    derandomize=MODE != "campaign", print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def known_crash(err: BaseException, known: list[tuple[type, str]]) -> None:
    """Discard an example that hits a crash already reported to its owner (listed in `known`, each
    pinned as an xfail reproducer), so the fuzzer keeps looking for new ones; re-raise anything else."""
    if any(isinstance(err, t) and text in str(err) for t, text in known):
        reject()
    raise err
