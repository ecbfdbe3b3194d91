"""Decode speed and resident memory with and without giving back the weights file's pages after load
(edge_llm/pages.py), interleaved fresh processes:

    python benchmarks/release_pages_ab.py PACKAGE [--depth 128] [--rounds 4]

Each child: load, prefill `depth` tokens (BOS + random ids), one warm-up step, then 32 decode steps of
random ids (depth_peers.py's definition), and VmRSS. "off" replaces release_clean_pages with a no-op.
The order alternates by round.
"""
import argparse
import json
import subprocess
import sys

CHILD = r"""
import sys, time, json, numpy as np
import edge_llm.session as S
if sys.argv[2] == 'off':
    S.release_clean_pages = lambda p: 0
from edge_llm.api import Model
depth = int(sys.argv[3])
m = Model.load(sys.argv[1], threads=2, context_length=depth + 40, speculate='off')
rng = np.random.default_rng(0)
c = m.cache()
m.session.forward(np.concatenate([[1], rng.integers(3, 8192, depth - 1)]).astype(np.int64), c)
m.session.forward(np.array([5], np.int64), c)
t = time.perf_counter()
for i in rng.integers(3, 8192, 32):
    m.session.forward(np.array([i], np.int64), c)
tok_s = 32 / (time.perf_counter() - t)
rss = [int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
print(json.dumps([tok_s, rss]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--depth", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    res = {"on": [], "off": []}
    for r in range(a.rounds):
        for mode in (["on", "off"] if r % 2 == 0 else ["off", "on"]):
            o = subprocess.run([sys.executable, "-c", CHILD, a.package, mode, str(a.depth)],
                               capture_output=True, text=True, check=True)
            res[mode].append(json.loads(o.stdout.strip().splitlines()[-1]))
            print(mode, [round(x, 2) for x in res[mode][-1]], flush=True)
    for k, v in res.items():
        print(k, "tok/s", [round(x[0], 1) for x in v], "rss MiB", [x[1] for x in v])


if __name__ == "__main__":
    main()
