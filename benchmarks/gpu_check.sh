#!/usr/bin/env bash
# CUDA checks, run on a GPU machine from the repository root: every test marked `gpu`,
# the training throughput and loop benchmarks on CUDA, and one end-to-end `balmm train --device cuda`.
# Where balmm's dependencies are not installed, put their wheels in .whl/ (see
# docs/benchmarks.md); they are installed into /tmp/site for this run only.
set -uo pipefail
OUT=${OUT:-/tmp/balmm-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log"
python3 benchmarks/bench_train.py --device cuda --threads 8 --repeats 2 --skip-e2e 2>&1 \
  | tee "$OUT/bench_train_cuda.log"
# the loop against a plain PyTorch loop on the GPU, large batches, eager / compile / bf16
python3 benchmarks/bench_loop.py --device cuda --n 200000 --batch 4096 16384 --compile --bf16 \
  2>&1 | tee "$OUT/bench_loop_cuda.log"
/usr/bin/time -v python3 -m balmm --log-format json train --device cuda --out "$OUT/train_rosmap" \
  >"$OUT/train_cli.log" 2>&1
echo "balmm train --device cuda exit code: $?"
grep -E "Elapsed|Maximum resident" "$OUT/train_cli.log"
python3 -c "import json,sys; m=json.load(open('$OUT/train_rosmap/metrics.json')); print('device', m['protocol']['device'], 'test fused', {k: round(v,3) for k,v in m['test']['fused'].items() if isinstance(v,float)})"
rm -rf "$OUT/train_rosmap/model" "$OUT/train_rosmap/embeddings.h5ad"
