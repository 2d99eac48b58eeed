#!/bin/bash
# Device calls 2 and 3 (after build_and_test.sh on the same warm machine: /tmp/site holds the kernels).
#   bash scripts/gpu/bench.sh prefill   # unchunked prefill, 3 strategies + transformers peer
#   bash scripts/gpu/bench.sh chunked   # training step (2B hybrid, ckpt off/on) + chunked prefill
# Results under $OUT as JSON/PNG/logs. Each part runs under its own timeout inside the 600 s call.
set -uo pipefail
OUT=${OUT:-/tmp/viper-out}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VIPER_LOG_LEVEL=INFO
python3 -c 'import mamba_ssm, causal_conv1d; print("kernels", mamba_ssm.__version__)' || echo "WARNING: kernels missing"
case "${1:-}" in
prefill)
  timeout 560 python3 -m lightning_viper.bench prefill \
    "{\"out_dir\": \"$OUT\", \"tag\": \"prefill\", \"time_budget_s\": 490, \"peer_max_frames\": 8192}" \
    2>&1 | tee "$OUT/prefill.log" | grep -v "^\s*$" | tail -45 ;;
chunked)
  timeout 170 python3 -m lightning_viper.bench train "{\"out_dir\": \"$OUT\", \"tag\": \"train\"}" \
    2>&1 | tee "$OUT/train.log" | tail -8
  timeout 380 python3 -m lightning_viper.bench prefill \
    "{\"out_dir\": \"$OUT\", \"tag\": \"prefill_chunked\", \"prefill_chunk\": 32768, \"strategies\": [\"none\", \"transv\"],
      \"frames\": [1024, 4096, 16384, 32768], \"peer\": false, \"repeats\": 2, \"time_budget_s\": 340}" \
    2>&1 | tee "$OUT/prefill_chunked.log" | tail -30 ;;
*) echo "usage: bench.sh prefill|chunked" >&2; exit 2 ;;
esac
