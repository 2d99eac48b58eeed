#!/bin/bash
# Issue 18 measurements on one GPU, batched into one device call (results and logs under $OUT).
#   device call, carry [".gpu"]:  bash scripts/gpu/issue18.sh prefill chunked train decode profile
# More than 7 result files are packed into $OUT/issue18.tgz (the device returns at most 8 files).
# Each step has its own time limit; a step that fails leaves its JSON (rewritten after every row).
set -uo pipefail
OUT=${OUT:-/tmp/viper-out}
mkdir -p "$OUT"
# a second invocation on the same machine (a step run beside another) reuses the unpacked kit
[ -d /tmp/site/mamba_ssm ] || bash .gpu/kernels.sh unpack > "$OUT/unpack.log" 2>&1 || { cat "$OUT/unpack.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VIPER_LOG_LEVEL=INFO PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# compiled kernels (Triton's, Inductor's) kept between machines of the same image: SAVE_CACHES=1
# writes them to $OUT/caches.tgz; copied to .gpu/caches.tgz (carried with .gpu) they are read back.
# Their keys hold the source, GPU and versions, so a stale entry is never used, only recompiled.
export TRITON_CACHE_DIR=/tmp/viper-cache/triton TORCHINDUCTOR_CACHE_DIR=/tmp/viper-cache/inductor
if [ -f .gpu/caches.tgz ] && [ ! -d /tmp/viper-cache ]; then
  mkdir -p /tmp/viper-cache && tar -xzf .gpu/caches.tgz -C /tmp/viper-cache && echo "kernel caches from .gpu/caches.tgz"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader
B="python3 -m lightning_viper.bench"
TAG=${TAG:-h200}
ENC=${ENCODER_OPTIONS:-{\"compile\": true\}}  # vision tower options for prefill / train / profile (fused layers are the default)
FRAMES=${PREFILL_FRAMES:-64, 1024, 4096, 8192, 10240}
step() {  # name seconds verb json
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" $B "$@" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? $((SECONDS - t0)) s"
  grep -E "frames: |peer \{|train ckpt|decode \{|encoder \{|regions ms|counts ours|Error|error" "$OUT/$name.log" | cut -c1-260 | tail -25
}
for what in "$@"; do
  case "$what" in
  prefill)  # none / TransV whole-sequence 64..10k frames, transformers' NemotronH 64..8k (strategy none); PREFILL_WARM_ALL=true warms every size
    step prefill "${PREFILL_S:-330}" prefill "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_prefill\", \"strategies\": [\"transv\", \"none\"],
      \"frames\": [$FRAMES], \"repeats\": 2, \"peer_max_frames\": ${PEER_MAX:-8192}, \"plot\": false, \"encoder_options\": $ENC,
      \"warmup_every_size\": ${PREFILL_WARM_ALL:-false}}" ;;
  chunked)  # TransV chunked prefill at 102,400 frames (CHUNKED_FRAMES): backbone peak memory (random vision tokens)
    n=${CHUNKED_FRAMES:-102400}
    step "chunked_$((n / 1024))k" "${CHUNKED_S:-200}" prefill "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_chunked_$((n / 1024))k\", \"prefill_chunk\": 32768,
      \"strategies\": [\"transv\"], \"frames\": [$n], \"warmup\": 0, \"repeats\": 1, \"peer\": false,
      \"encode\": false, \"plot\": false, \"memory_trace\": true, \"progress_s\": 30}" ;;
  train)  # stage-2 step, 2B hybrid, 256 frames, no checkpointing
    step train "${TRAIN_S:-120}" train "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_train_2b\", \"checkpointing\": [false], \"repeats\": 4,
      \"batch_size\": ${TRAIN_BATCH:-1}, \"encoder_options\": $ENC}" ;;
  decode)  # decode tokens/s after 32k input tokens, Nemotron-Nano-9B-v2 vs Qwen2.5-7B
    step decode "${DECODE_S:-200}" decode "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_decode_32k\", \"repeats\": 2}" ;;
  profile)  # where one TransV prefill of 1,024 frames spends its time
    step profile "${PROFILE_S:-90}" breakdown "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_breakdown_1k\", \"frames\": 1024, \"encoder_options\": $ENC}" ;;
  peerprofile)  # our backbone and transformers' NemotronH, the same embeddings, each profiled (PEERPROFILE_FRAMES, 64)
    pf=${PEERPROFILE_FRAMES:-64}
    step peerprofile "${PEERPROFILE_S:-120}" breakdown "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_peer_profile_$pf\", \"frames\": $pf,
      \"strategy\": \"none\", \"mode\": \"peer\", \"row_limit\": 40}" ;;
  encoder)  # SigLIP so400m alone: transformers' / fused layers, eager / compiled (ENCODER_VARIANTS); SDPA backends
    step encoder "${ENCODER_S:-300}" encoder "{\"out_dir\": \"$OUT\", \"tag\": \"${TAG}_encoder\", \"frames\": 512,
      \"sdpa_backends\": ${ENCODER_BACKENDS:-[\"cudnn\", \"flash\", \"efficient\"]},
      \"variants\": ${ENCODER_VARIANTS:-null}, \"profile\": ${ENCODER_PROFILE:-[1, 3]}}" ;;
  gputests)  # the GPU test suite (pytest -m gpu)
    timeout "${GPUTESTS_S:-300}" python3 -m pytest -q -m gpu -rA -p no:cacheprovider --continue-on-collection-errors \
      ${GPUTESTS:-tests/backbones tests/compression tests/ops tests/encoders tests/projectors} > "$OUT/gputests.log" 2>&1
    echo "== gputests rc=$?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/gputests.log" | tail -15 ;;
  *) echo "unknown step $what" >&2 ;;
  esac
done
if [ -n "${SAVE_CACHES:-}" ] && [ -d /tmp/viper-cache ]; then
  tar -czf "$OUT/caches.tgz" -C /tmp/viper-cache . && echo "kernel caches: $(du -h "$OUT/caches.tgz" | cut -f1) (returned up to 16 MiB)"
fi
# the device returns at most 8 files from $OUT: more than that go into one archive
files=$(find "$OUT" -maxdepth 1 -type f ! -name issue18.tgz ! -name caches.tgz -printf '%P\n')
if [ "$(echo "$files" | grep -c .)" -gt 7 ]; then
  (cd "$OUT" && tar -czf issue18.tgz --remove-files $files) && echo "packed $(echo "$files" | wc -l) files into issue18.tgz"
fi
