#!/usr/bin/env bash
# Everything a lent GPU should check and measure, in one call (the device tool's machines are bare and
# short-lived, so one script runs it all and leaves JSON/logs in OUT_DIR):
#   1. the ViT-H/14 training-step bench (bf16 fast path vs the eager fp32 baseline, MFU),
#   2. a 2-epoch smoke run of bench/quality.py on the GPU (only if DATA is given),
#   3. the GPU, fast-path and golden tests,
#   4. feature extraction vs transformers.IJepaModel,
#   5. the same step bench with torch.compile.
# Each part has its own time limit, so one failure or hang does not cost the others.
#   bash bench/gpu_suite.sh OUT_DIR [imagenette2_64px.npz]
set -u
OUT=${1:?usage: bench/gpu_suite.sh OUT_DIR [DATA.npz]}
DATA=${2:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
H14=(--model vit_huge --patch-size 14 --img-size 224 --batch-size 128 --pred-depth 12 --pred-emb-dim 384 --bf16)

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"

echo "=== 1. train step, ViT-H/14 224 bf16, batch 128"
timeout 240 $PY bench/train_step.py "${H14[@]}" --steps 10 --warmup 2 | tee "$OUT/train_step_h14.json"

if [ -n "$DATA" ]; then
  echo "=== 2. quality smoke (2 epochs)"
  timeout 150 $PY bench/quality.py --data "$DATA" --config imagenette64_vit_tiny_p4 --epochs 2 --minutes 2 \
      --pooling avg_last4 --max-test 1000 --out /tmp/quality_smoke 2>&1 | tail -n 5 | tee "$OUT/quality_smoke.txt"
fi

echo "=== 3. tests"
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/perf tests/evaluate/test_gpu.py tests/train/test_golden_step.py \
    2>&1 | tail -n 25 | tee "$OUT/tests.txt"

echo "=== 4. extraction vs transformers.IJepaModel"
timeout 90 $PY bench/extract.py --model vit_huge --patch-size 14 --img-size 224 --batch-size 128 --batches 10 --bf16 \
    | tee "$OUT/extract_h14.json"

echo "=== 5. train step with torch.compile"
timeout 300 $PY bench/train_step.py "${H14[@]}" --steps 10 --warmup 6 --compile --compile-probe 2 \
    | tee "$OUT/train_step_h14_compile.json"
echo "=== done"
