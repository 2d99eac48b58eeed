#!/bin/bash
# Device calls after build_and_test.sh on the same warm machine (/tmp/site holds the kernels).
#   bash scripts/gpu/bench.sh prefill   # whole-sequence prefill, 3 strategies, 64..8192 frames + transformers peer
#   bash scripts/gpu/bench.sh chunked   # training step (2B hybrid, ckpt off/on) + chunked prefill to 32k frames
#   bash scripts/gpu/bench.sh long      # whole-sequence prefill (no compression) past mamba-ssm's int32 limit
# The Mamba-2 mixer splits kernel calls that would overflow 32-bit indexing (ops/pieces.py), so
# whole-sequence prefill is bound by memory alone. Results under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/viper-out}
mkdir -p "$OUT"
# expandable segments: at 12k frames the default allocator left 17 GiB reserved but unusable (fragments)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VIPER_LOG_LEVEL=INFO PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -c 'import mamba_ssm, causal_conv1d; print("kernels", mamba_ssm.__version__)' || echo "WARNING: kernels missing"
B="python3 -m lightning_viper.bench"
case "${1:-}" in
prefill)
  timeout 560 $B prefill "{\"out_dir\": \"$OUT\", \"tag\": \"prefill_whole\", \"frames\": [64, 256, 1024, 4096, 8192],
    \"repeats\": 2, \"time_budget_s\": 500}" > "$OUT/prefill.log" 2>&1
  echo "rc=$?"; grep "frames:\|peer" "$OUT/prefill.log" | cut -c1-220 ;;
chunked)
  timeout ${TRAIN_S:-240} $B train "{\"out_dir\": \"$OUT\", \"tag\": \"train_2b\", \"repeats\": 4}" > "$OUT/train.log" 2>&1
  echo "rc=$?"; grep "ckpt=" "$OUT/train.log" | cut -c1-220
  timeout 400 $B prefill "{\"out_dir\": \"$OUT\", \"tag\": \"chunked_32k\", \"prefill_chunk\": 32768,
    \"strategies\": [\"transv\", \"none\"], \"frames\": [1024, 32768], \"repeats\": 1, \"peer\": false}" \
    > "$OUT/prefill_chunked.log" 2>&1
  echo "rc=$?"; grep "frames:" "$OUT/prefill_chunked.log" | cut -c1-220 ;;
long)
  timeout ${LONG_S:-300} $B prefill "{\"out_dir\": \"$OUT\", \"tag\": \"prefill_whole_long\", \"strategies\": [\"none\"],
    \"frames\": [64, 8192, 12288, 16384, 20480], \"warmup\": 1, \"repeats\": 1, \"peer\": false}" > "$OUT/prefill_long.log" 2>&1
  echo "rc=$?"; grep "frames:\|out of memory\|Error" "$OUT/prefill_long.log" | cut -c1-220 ;;
*) echo "usage: bench.sh prefill|chunked|long" >&2; exit 2 ;;
esac
