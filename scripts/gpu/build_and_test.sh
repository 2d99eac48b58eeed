#!/bin/bash
# Device call 1 (carry [".gpu"]): build mamba-ssm + causal-conv1d into /tmp/site for this GPU,
# then run the project's GPU tests (pytest -m gpu) in the time left of a ${BUDGET_S:-575} s call.
# Results under $OUT: nvidia_smi.txt, versions.txt, build.log, gpu_tests.log. The build takes ~500-540 s on an
# H100, so little time is left for the tests: run them again in the next call (Triton compiles the kernel
# tests for a minute or more), while the machine is still warm (30 s) and /tmp/site still exists.
set -uo pipefail
start=$SECONDS
OUT=${OUT:-/tmp/viper-out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
python3 -c 'import torch, transformers, triton; print("torch", torch.__version__, "transformers", transformers.__version__,
"triton", triton.__version__, torch.cuda.get_device_name())' 2>&1 | tee "$OUT/versions.txt"
bash .gpu/kernels.sh build > "$OUT/build.log" 2>&1
echo "build rc=$? after $((SECONDS - start)) s" | tee -a "$OUT/build.log"
tail -5 "$OUT/build.log"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
left=$(( ${BUDGET_S:-575} - (SECONDS - start) ))
echo "GPU tests with $left s left"
if [ "$left" -gt 20 ]; then
  timeout "$left" python3 -m pytest -m gpu -q -rA -p no:cacheprovider tests/ops tests/compression tests/backbones \
    tests/encoders tests/projectors tests/bench > "$OUT/gpu_tests.log" 2>&1
  echo "pytest rc=$?" >> "$OUT/gpu_tests.log"
  grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|rc=" "$OUT/gpu_tests.log" | tail -60
fi
