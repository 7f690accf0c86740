#!/usr/bin/env bash
# Every benchmark and accuracy check behind the README's numbers, one after the other, on an
# otherwise idle machine (about 30 minutes on 2 cores). Results land in benchmarks/results/.
#
#   bash benchmarks/run_all.sh ../shared/data/cifar10     # a CIFAR-10 root
set -euo pipefail
DATA=${1:?usage: bash benchmarks/run_all.sh CIFAR10_ROOT}
OUT=benchmarks/results
PY=.venv/bin/python
RK=.venv/bin/resnetkit
mkdir -p "$OUT"
log() { echo "== $(date +%H:%M:%S) $*"; }

log "inference: ResNet-50 224x224, batch 1 and 16"
$RK bench --model resnet50 --batch-size 1 --iters 20 --rounds 4 --out "$OUT/bench-resnet50-b1.json"
$RK bench --model resnet50 --batch-size 16 --iters 4 --rounds 4 --out "$OUT/bench-resnet50-b16.json"
log "inference: the shipped ResNet-20 (CIFAR-10), batch 1 and 128"
$RK bench --model resnet20.cifar10 --batch-size 1,128 --iters 20 \
    --out "$OUT/bench-resnet20.json"
log "int8 accuracy of resnet20.cifar10 on the 10,000 CIFAR-10 test images"
$RK quantize --model resnet20.cifar10 --out "$OUT/quantize/resnet20.cifar10.int8.onnx" \
    --calibration-dataset cifar10 --calibration-dir "$DATA" --calibration-size 512 \
    --eval-dataset cifar10 --eval-dir "$DATA" > "$OUT/quantize-resnet20.json"
cat "$OUT/quantize-resnet20.json"
rm -rf "$OUT/quantize"
log "training throughput: ResNet-20 on CIFAR-10"
$PY -m benchmarks.train_throughput --data-dir "$DATA" --out "$OUT/train_throughput.json"
log "data pipeline"
$PY -m benchmarks.data_pipeline --data-dir "$DATA" --out "$OUT/data_pipeline.json"
log "HTTP load test"
$PY -m benchmarks.load_test --model resnet20.cifar10 --out "$OUT/load_test.json"
for backend in torch onnx optimized; do
    suffix=$([ "$backend" = torch ] || echo "_$backend")
    $PY -m benchmarks.load_test --model resnet50 --backend "$backend" --requests 200 \
        --concurrency 16 --out "$OUT/load_test_resnet50$suffix.json"
done
log "few-shot transfer: resnet20.cifar10 fine-tuned vs scratch"
$RK reproduce transfer --data-dir "$DATA" --out runs/transfer --no-progress > /dev/null
cp runs/transfer/transfer.json "$OUT/transfer.json"
log done
