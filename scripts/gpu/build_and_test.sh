#!/bin/bash
# Device call: get mamba-ssm + causal-conv1d into /tmp/site, then run the project's GPU tests (pytest -m gpu)
# in the time left of a ${BUDGET_S:-575} s call.
#   carry [".site"]: unpack the kernels built earlier for sm_90 (.site/site.tar.xz, seconds), or
#   carry [".gpu"]:  build them (`.gpu/kernels.sh build`, ~500-540 s on an H100: little time is left for tests).
# Results under $OUT: nvidia_smi.txt, versions.txt, build.log, gpu_tests.log (with each check's measured error).
set -uo pipefail
start=$SECONDS
OUT=${OUT:-/tmp/viper-out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
if [ -f .site/site.tar.xz ]; then
  tar xJf .site/site.tar.xz -C /tmp > "$OUT/build.log" 2>&1
  echo "unpacked .site/site.tar.xz rc=$? after $((SECONDS - start)) s" | tee -a "$OUT/build.log"
else
  bash .gpu/kernels.sh build > "$OUT/build.log" 2>&1
  echo "build rc=$? after $((SECONDS - start)) s" | tee -a "$OUT/build.log"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c 'import torch, transformers, triton, mamba_ssm, causal_conv1d; print("torch", torch.__version__,
"transformers", transformers.__version__, "triton", triton.__version__, "mamba_ssm", mamba_ssm.__version__,
"causal_conv1d", causal_conv1d.__version__, torch.cuda.get_device_name())' 2>&1 | tee "$OUT/versions.txt"
left=$(( ${BUDGET_S:-575} - (SECONDS - start) ))
echo "GPU tests with $left s left"
if [ "$left" -gt 20 ]; then
  timeout "$left" python3 -m pytest -m gpu -rA -p no:cacheprovider --durations=15 --log-cli-level=INFO \
    tests/ops tests/compression tests/backbones tests/encoders tests/projectors tests/bench > "$OUT/gpu_tests.log" 2>&1
  echo "pytest rc=$?" >> "$OUT/gpu_tests.log"
  grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|rc=| err " "$OUT/gpu_tests.log" | tail -80
fi
