#!/usr/bin/env bash
# The GPU bench in one bounded run (reports/gpu/README.md shows what it produced).
#
#   scripts/gpu_bench.sh          # on the GPU machine: cuda, the default GPU batches
#   scripts/gpu_bench.sh cpu      # here: the same steps on small batches, to test the script
#
# Steps, each under its own `timeout` so the whole stays under TOTAL seconds (default 330):
#   0. install carried wheels (.whl/: liger-kernel) into /tmp/site, print the environment;
#   1. cestab bench (time budget BENCH_BUDGET s; what is left is marked skipped);
#   2. the timing check: harness median vs torch.utils.benchmark.Timer (and, on cuda,
#      triton.testing.do_bench) for F.cross_entropy's forward on one batch;
#   3. with the time left, an accuracy run (cestab run --device cuda --budget none) of the
#      torch, liger and JAX adapters, journalled row by row, so a cut-off run keeps its rows.
# Everything lands under $OUT (at most a few files): log.txt, timing_check.json, bench.csv
# and gpu_runs.tar.gz (the run folders: bench.parquet, bench.csv, results, run.json, logs).
set -u
DEVICE=${1:-cuda}
OUT=${OUT:-/tmp/gpu_bench_out}
PY=${PYTHON:-python3}
TOTAL=${TOTAL:-330}
BENCH_BUDGET=${BENCH_BUDGET:-210}
RUNS=/tmp/gpu_runs
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)
left() { echo $((TOTAL - ($(date +%s) - START))); }

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

TORCH=torch.cross_entropy,torch.log_softmax_nll,torch.softmax_log
JAX_INT=jax.optax.softmax_cross_entropy_with_integer_labels,jax.log_softmax_gather
JAX_DENSE=jax.optax.softmax_cross_entropy,jax.optax.safe_softmax_cross_entropy
# cheapest and most asked-for first: a budget that runs out cuts the tail
BENCH_ADAPTERS=torch.cross_entropy,liger.cross_entropy,jax.optax.softmax_cross_entropy_with_integer_labels.jit,torch.compile.cross_entropy,jax.log_softmax_gather.jit,torch.log_softmax_nll,torch.softmax_log,jax.optax.softmax_cross_entropy_with_integer_labels,jax.log_softmax_gather,jax.optax.softmax_cross_entropy.jit,jax.optax.safe_softmax_cross_entropy.jit,$JAX_DENSE
ACCURACY_ADAPTERS=$TORCH,liger.cross_entropy,$JAX_INT,jax.optax.softmax_cross_entropy_with_integer_labels.jit
if [ "$DEVICE" = cuda ]; then
  BENCH_EXTRA=(--repeats 5 --min-time 0.1 --max-time 1.0)
  CHECK_SHAPE=8192x128256
  ACCURACY_EXTRA=(--dtypes float16,bfloat16,float32)
else  # the script's own test: small batches, few cases
  BENCH_EXTRA=(--shapes 64x1000,256x4096 --repeats 3 --min-time 0.05 --max-time 0.3)
  CHECK_SHAPE=512x8192
  ACCURACY_EXTRA=(--dtypes float32 --regimes typical,large_offset --no-corpus)
fi

# adapters whose framework is missing here (liger off the GPU machine) are left out, not fatal
available() { $PY -c "import sys, harness; have = set(harness.all_adapters()); print(','.join(a for a in sys.argv[1].split(',') if a in have))" "$1"; }
BENCH_ADAPTERS=$(available "$BENCH_ADAPTERS")
ACCURACY_ADAPTERS=$(available "$ACCURACY_ADAPTERS")

echo "== environment ($DEVICE)"
nvidia-smi -L 2>/dev/null
$PY - <<'EOF'
import importlib.metadata as md
for name in ("torch", "triton", "jax", "jaxlib", "liger-kernel", "numpy", "pandas", "pyarrow", "ml-dtypes", "optax"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
EOF
$PY -m harness.cli list | grep -E "^(liger|torch|jax)" | cut -c1-60

echo "== 1. cestab bench ($(left) s left)"
timeout -s INT -k 20 $(( $(left) - 80 )) $PY -m harness.cli bench --device "$DEVICE" --adapters "$BENCH_ADAPTERS" --out "$RUNS" \
  --time-budget "$BENCH_BUDGET" --timeout 120 "${BENCH_EXTRA[@]}"
echo "bench exit $?"
latest=$(ls -td "$RUNS"/*/ 2>/dev/null | head -1)
[ -n "$latest" ] && [ -f "$latest/bench.csv" ] && cp "$latest/bench.csv" "$OUT/bench.csv"

echo "== 2. timing check ($(left) s left)"
DEVICE=$DEVICE CHECK_SHAPE=$CHECK_SHAPE OUT=$OUT timeout $(( $(left) > 80 ? 45 : $(left) / 2 )) $PY - <<'EOF'
"""Harness median vs torch.utils.benchmark.Timer (and triton.testing.do_bench on cuda) for
F.cross_entropy's forward, interleaved in rounds, samples pooled."""
import json, os, statistics
import torch
import harness.bench.measure as B
from harness.adapters import get
from torch.utils.benchmark import Timer

device = os.environ["DEVICE"]
n, v = (int(x) for x in os.environ["CHECK_SHAPE"].split("x"))
if device == "cpu":
    torch.set_num_threads(1)
bench_case = B.BenchCase("float32", n, v, timing=B.TimingSpec(10, 200, 0.2, 1.0))
case = bench_case.case()
prepared = get("torch.cross_entropy").prepare(case, device)
z = torch.from_numpy(case.logits.copy()).to(device).requires_grad_()
t = torch.from_numpy(case.target).to(device)
F = torch.nn.functional
fn = lambda: F.cross_entropy(z, t, reduction="none", ignore_index=-100)
timer = Timer("fn()", globals={"fn": fn})
ours, theirs, triton_ms = [], [], []
for _ in range(5):
    ours += B.measure_pass(prepared, "forward", bench_case.timing).samples
    m = timer.blocked_autorange(min_run_time=0.2)
    theirs += [x / m.number_per_run for x in m.raw_times]
    if device == "cuda":
        import triton.testing
        triton_ms.append(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))
result = {
    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    "shape": [n, v], "dtype": "float32", "call": "F.cross_entropy(z, t, reduction='none') forward, z.requires_grad",
    "harness_median_ms": statistics.median(ours) * 1e3,
    "timer_median_ms": statistics.median(theirs) * 1e3,
    "do_bench_median_ms": statistics.median(triton_ms) if triton_ms else None,
}
result["harness_over_timer"] = result["harness_median_ms"] / result["timer_median_ms"]
if triton_ms:
    result["harness_over_do_bench"] = result["harness_median_ms"] / result["do_bench_median_ms"]
result["within_5_percent"] = all(abs(result[k] - 1) <= 0.05 for k in ("harness_over_timer", "harness_over_do_bench") if k in result)
print(json.dumps(result, indent=1))
open(os.path.join(os.environ["OUT"], "timing_check.json"), "w").write(json.dumps(result, indent=1) + "\n")
EOF
echo "timing check exit $?"

echo "== 3. accuracy run ($(left) s left)"
if [ "$(left)" -gt 40 ]; then
  timeout -s INT -k 10 $(( $(left) - 15 )) $PY -m harness.cli run --device "$DEVICE" --budget none --adapters "$ACCURACY_ADAPTERS" \
    --out "$RUNS" --quiet "${ACCURACY_EXTRA[@]}"
  echo "accuracy run exit $? (124: cut off by the time limit; its rows.jsonl keeps the rows it had)"
fi

tar -czf "$OUT/gpu_runs.tar.gz" -C "$RUNS" .
echo "== done in $(( $(date +%s) - START )) s; $OUT:"
ls -la "$OUT"
