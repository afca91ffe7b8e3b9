#!/usr/bin/env bash
# benchmarks/gpu.sh: issue 20's GPU figures in one command, in under 8 minutes on one H100/H200.
#
#   bash benchmarks/gpu.sh             on a GPU machine (offline: no weights are downloaded)
#   bash benchmarks/gpu.sh --dry-run   the same parts on the CPU with tiny sizes (a check of the script)
#   bash benchmarks/gpu.sh --fetch-wheels   (here, with the pip registry) the wheels the lent machine lacks
#                                           (pydantic and its parts, for its python 3.12) into .whl/
#
# Parts, each with its own timeout (seconds), each writing into $OUT (else a temp folder):
#   doctor       vidseq doctor --json: versions, decoders, GPU, providers               doctor.json
#   resnet50     vidseq bench: ResNet-50 fp16, decode / model-only / end to end         bench-resnet50.json
#   lite0        vidseq bench: EfficientNet-Lite0, torch and onnxruntime(-gpu) where it  bench-lite0.json
#                has a GPU provider (else reported as skipped, with why)
#   train-amp    GRU training steps (AdamW, cross-entropy): fp32 vs AMP fp16 vs bf16    train-amp.json
#   rnn-packing  LSTM/GRU forward+backward on variable lengths: packed vs padded (cuDNN) rnn-packing.json
#   pytest-gpu   python -m pytest -m gpu on the test files that have gpu tests           pytest-gpu.log
# and summary.txt with every part's output and exit status (8 files at most come back from $OUT).
#
# Weights: random init (backbone.weights=null): only throughput matters, and nothing is fetched.
# Python: .venv/bin/python where it imports vidseq's needs, else $PYTHON or python3 with this checkout
# on PYTHONPATH; wheels in .whl/ (see /work/.library/device/README.md) are installed to /tmp/site first.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
DRY=0
WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"
case "${1:-}" in
  --dry-run) DRY=1 ;;
  --fetch-wheels)
    # shellcheck disable=SC2086 # WHEELS is a list of requirements
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl $WHEELS ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu.sh [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac
OUT_DIR=${OUT:-$(mktemp -d -t vidseq-gpu-XXXXXX)}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=/tmp/vidseq-yolo-config
export VIDSEQ_ONNX_CACHE=/tmp/vidseq-onnx-cache MLFLOW_TRACKING_URI=sqlite:////tmp/vidseq-gpu-mlflow.db

say() { echo "$*" | tee -a "$SUMMARY"; }

# -- python ----------------------------------------------------------------------------------
NEEDS="import torch, numpy, pydantic, yaml, typer, rich, cv2, vidseq.cli, vidseq.bench"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=""
for candidate in .venv/bin/python "${PYTHON:-}" python3; do
  if [ -n "$candidate" ] && "$candidate" -c "$NEEDS" >/dev/null 2>&1; then PY=$candidate; break; fi
done
if [ -z "$PY" ]; then
  say "no python here imports vidseq's needs; what python3 lacks:"
  python3 -c "$NEEDS" 2>&1 | tail -1 | tee -a "$SUMMARY"
  say "carry the missing ones as wheels in .whl/: run bash benchmarks/gpu.sh --fetch-wheels where pip works"
  exit 2
fi
say "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu PRECISION=fp32 CLIPS=2 COUNT=4 BATCH=4 WORKERS=1 REPEATS=1 SIZE="-o backbone.input_size=64" STEPS=2
  T_DOCTOR=60 T_BENCH=90 T_TRAIN=60 T_RNN=60
else
  DEVICE=cuda PRECISION=fp16 CLIPS=32 COUNT=32 BATCH=128 WORKERS=auto REPEATS=3 SIZE="" STEPS=40
  T_DOCTOR=45 T_BENCH=120 T_TRAIN=45 T_RNN=45
fi
T_PYTEST=100
FAILED=0
ERR=$(mktemp -t vidseq-gpu-stderr-XXXXXX)

# part NAME SECONDS OUTFILE CMD...: runs CMD under a timeout, its stdout into OUTFILE, both into the summary
part() {
  local name=$1 seconds=$2 outfile=$3
  shift 3
  say ""
  say "== $name (timeout ${seconds}s): $*"
  local start=$SECONDS
  timeout -k 10 "$seconds" "$@" >"$OUT_DIR/$outfile" 2>"$ERR"
  local rc=$?
  tee -a "$SUMMARY" <"$OUT_DIR/$outfile"
  tail -n 15 "$ERR" | tee -a "$SUMMARY"
  say "== $name: exit $rc after $((SECONDS - start)) s$([ $rc = 124 ] && echo ' (timed out)')"
  [ $rc = 0 ] || FAILED=$((FAILED + 1))
}

BENCH=("$PY" -m vidseq bench --json --clips "$CLIPS" --repeats "$REPEATS" --videos 13320
  -o backbone.weights=null -o extract.device="$DEVICE" -o extract.precision="$PRECISION"
  -o extract.batch_size="$BATCH" -o extract.num_workers="$WORKERS" -o sampling.count="$COUNT")

part doctor "$T_DOCTOR" doctor.json "$PY" -m vidseq doctor --json --timeout 2
# shellcheck disable=SC2086 # SIZE is empty or one -o pair
part resnet50 "$T_BENCH" bench-resnet50.json "${BENCH[@]}" -o backbone.name=resnet50 $SIZE --runtimes torch
# shellcheck disable=SC2086
part lite0 "$T_BENCH" bench-lite0.json "${BENCH[@]}" -o backbone.name=efficientnet_lite0 $SIZE \
  --runtimes torch,onnxruntime

RNN_BENCH=$(mktemp -t vidseq-rnn-bench-XXXXXX.py)
cat >"$RNN_BENCH" <<'PYEOF'
"""GRU training steps (fp32 / AMP) or LSTM/GRU packed vs padded, on random features: sequences/s."""
import json, sys, time
import torch
from vidseq.models import build_model

mode, device, steps = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
B, T, D, C, H = (64, 32, 1280, 101, 512) if device.type == "cuda" else (4, 6, 32, 5, 16)  # CPU: a dry run
gen = torch.Generator().manual_seed(0)
x = torch.randn(B, T, D, generator=gen).to(device)
y = torch.randint(0, C, (B,), generator=gen).to(device)
lengths = torch.randint(T // 4, T + 1, (B,), generator=gen)

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def rate(name, *, pack=True, dtype=None, train=True):
    torch.manual_seed(0)
    model = build_model(name, input_dim=D, num_classes=C, hidden_size=H, pack=pack).to(device).train(train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    rounds = 3 if device.type == "cuda" else 1
    for _ in range(rounds):
        step()
    best = 0.0
    for _ in range(rounds):
        sync(); start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(); best = max(best, steps * B / (time.perf_counter() - start))
    return round(best, 1)

out = {"device": str(device), "batch": B, "steps": T, "dim": D, "hidden": H, "lengths": [int(lengths.min()), T]}
if mode == "train":
    out["gru sequences/s"] = {"fp32": rate("gru"), "amp fp16": rate("gru", dtype=torch.float16)}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        out["gru sequences/s"]["amp bf16"] = rate("gru", dtype=torch.bfloat16)
else:
    for name in ("lstm", "gru"):
        out[f"{name} sequences/s"] = {"packed": rate(name, pack=True), "padded": rate(name, pack=False)}
print(json.dumps(out))
PYEOF
part train-amp "$T_TRAIN" train-amp.json "$PY" "$RNN_BENCH" train "$DEVICE" "$STEPS"
part rnn-packing "$T_RNN" rnn-packing.json "$PY" "$RNN_BENCH" packing "$DEVICE" "$STEPS"
rm -f "$RNN_BENCH"

if [ "$DRY" = 1 ]; then
  say ""
  say "== pytest-gpu: skipped in --dry-run (on a GPU: $PY -m pytest -m gpu on $(grep -l 'mark.gpu' tests/*.py | tr '\n' ' '))"
else
  mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/*.py)
  part pytest-gpu "$T_PYTEST" pytest-gpu.log "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
    "${GPU_TESTS[@]}"
fi
say ""
say "done: $FAILED part(s) failed; files in $OUT_DIR"
[ "$FAILED" = 0 ]
