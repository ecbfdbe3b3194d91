"""Decode speed and resident memory with and without giving back the weights file's pages after load
(edge_llm/pages.py), interleaved fresh processes, 4 rounds:

    python benchmarks/release_pages_ab.py PACKAGE

Each child: load (context 512), prefill 128 tokens, 4 x 32 decode steps from position 128 (median),
then VmRSS. "off" replaces release_clean_pages with a no-op.
"""
import json, subprocess, sys
CHILD = r"""
import sys, time, json, numpy as np
import edge_llm.session as S
if sys.argv[2] == 'off':
    S.release_clean_pages = lambda p: 0
from edge_llm.api import Model
m = Model.load(sys.argv[1], threads=2, context_length=512, speculate='off')
c = m.cache(); m.session.forward(np.arange(5, 133, dtype=np.int64), c)
out = []
for _ in range(4):
    c.length = 128
    t = time.perf_counter()
    for i in range(32):
        m.session.forward(np.array([7 + 13 * i], np.int64), c)
    out.append(32 / (time.perf_counter() - t))
rss = [int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
print(json.dumps([sorted(out)[2], rss]))
"""
res = {'on': [], 'off': []}
for r in range(4):
    for mode in (['on', 'off'] if r % 2 == 0 else ['off', 'on']):
        o = subprocess.run([sys.executable, '-c', CHILD, sys.argv[1], mode], capture_output=True, text=True, check=True)
        res[mode].append(json.loads(o.stdout.strip().splitlines()[-1]))
for k, v in res.items():
    print(k, 'tok/s', [round(x[0], 1) for x in v], 'rss MiB', [x[1] for x in v])
