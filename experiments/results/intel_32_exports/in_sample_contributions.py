"""Where the default fit puts each whole model's milliseconds (``pred.contributions``): the table's outside models,
the held-out exports and six float32 models of the spaces; ``alone``: the share of the prediction from kernels the
table timed alone.

    python experiments/results/intel_32_exports/in_sample_contributions.py predictor_local_32_intel_shuffle8
"""
import sys, warnings, numpy as np, collections
import pathlib
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from weight_term import _run_tables
from latency_models import LatencyPredictor
run = sys.argv[1]
table, held, groups = _run_tables(run)
g = dict(groups)
pred = LatencyPredictor.fit(table)
timed = {r.kernel.key(): r.latency_ms for r in table.kernel_rows}
rows = [r for r in table.model_rows if not r.candidate] + g["torchvision"] + g["spaces, float32, all"][:6]
for r in rows:
    m = float(pred.on_scale(r.latency_ms, r.reference_ms))
    ks, ms, rest = pred.contributions(r.kernels)
    alone = np.array([k.key() in timed for k in ks])
    ops = collections.Counter()
    for k, x in zip(ks, ms):
        kind = k.op + ("_dw" if k.op == "conv" and k.groups > 1 and k.groups == k.input_shape[0] else "")
        ops[kind] += x
    print(f"{r.source[:26]:26s} meas {m:.3f} pred {ms.sum()+rest:.3f} err {100*((ms.sum()+rest)/m-1):+4.0f}% rest {rest:+.3f} alone {ms[alone].sum()/ms.sum():.2f} "
          + " ".join(f"{o}:{v:.3f}" for o, v in ops.most_common(5)))
