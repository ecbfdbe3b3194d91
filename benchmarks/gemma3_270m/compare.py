"""NLL, KL(fp32 || quantized) and top-1 agreement of quantized Gemma 3 270M packages against the fp32 one:
    CACHE=$WORK/cache python benchmarks/gemma3_270m/compare.py"""
import os
C = os.environ.get('CACHE', os.path.expandvars('$WORK/cache'))
import numpy as np
from edge_llm.session import ModelSession
from edge_llm.manifest import load_manifest
from edge_llm.tokenizer import Tokenizer
from edge_llm.export.validate import PROBE_TEXT
text = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. " + PROBE_TEXT)
tok = Tokenizer.from_manifest(load_manifest(C + '/g270-fp32'))
ids = tok.encode(text, bos=True)[:96]
def lsm(x): x = x - x.max(-1, keepdims=True); return x - np.log(np.exp(x).sum(-1, keepdims=True))
ref = lsm(ModelSession(C + '/g270-fp32', threads=1).logits_all(ids))
nll = lambda lp: float(-np.mean([lp[t, ids[t + 1]] for t in range(len(ids) - 1)]))
print(f"{len(ids)} tokens; fp32 NLL {nll(ref):.3f}")
for pkg in ('g270-int4', 'g270-int4-head8'):
    lp = lsm(ModelSession(f'{C}/{pkg}', threads=1).logits_all(ids))
    kl = float(np.mean(np.sum(np.exp(ref) * (ref - lp), -1)))
    top1 = float(np.mean(lp.argmax(-1) == ref.argmax(-1)))
    print(f"{pkg}: NLL {nll(lp):.3f}, KL(fp32||q) {kl:.4f}, top-1 agreement {top1:.1%}")
