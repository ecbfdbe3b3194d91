"""Which tensor families does int4 hurt? Quantize one family at a time (the rest float32) and measure the
KL divergence against the float model with the numpy reference forward, on 4 windows of 512 tokens of
corpus-valid.txt.

    python benchmarks/sensitivity.py > benchmarks/results/sensitivity-fixture.txt
"""
import numpy as np

from edge_llm.api import Model
from edge_llm.evaluate import corpus_tokens
from edge_llm.export.checkpoint import open_checkpoint
from edge_llm.export.config import config_for
from edge_llm.export.quant import dequantize_int4, quantize_int4
from edge_llm.export.reference import forward
from pathlib import Path

FIX = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
ck = open_checkpoint(FIX / "minicpm-tiny"); cfg = config_for(ck.config)
m = Model.load(Path(__file__).resolve().parents[1] / "edge_llm" / "bundled" / "minicpm-tiny-int4", threads=1)
ids = np.array(corpus_tokens(m, FIX / "corpus-valid.txt")[:2049])
W = {n: ck.load(n) for n in ck.names()}
def lsm(x): x=x.astype(np.float64); x=x-x.max(-1,keepdims=True); return x-np.log(np.exp(x).sum(-1,keepdims=True))
refl = [lsm(forward(cfg, W.get, ids[i*512:(i+1)*512])) for i in range(4)]
def kl(get):
    out=[]
    for i in range(4):
        lp = lsm(forward(cfg, get, ids[i*512:(i+1)*512])); lq=refl[i]
        out.append((np.exp(lq)*(lq-lp)).sum(-1).mean())
    return np.mean(out)
groups = {"head":["embed_tokens"], "qkv":["q_proj","k_proj","v_proj"], "o":["o_proj"], "gate_up":["gate_proj","up_proj"], "down":["down_proj"]}
for bs, sym in [(128, True), (128, False), (32, True)]:
  for g, keys in groups.items():
    Q = dict(W)
    for n in W:
        if any(k in n for k in keys) and W[n].ndim == 2:
            Q[n] = dequantize_int4(quantize_int4(W[n], block_size=bs, symmetric=sym, clip_search=not sym))
    print(bs, "sym" if sym else "asym-clip", g, round(kl(Q.get), 4), flush=True)
