"""The hybrid backbone on CUDA with mamba-ssm kernels against transformers' model on the CPU.

GPU machine only. The reference is transformers' ``NemotronHForCausalLM`` (fp32, CPU, its plain
PyTorch path) on the same checkpoint. transformers picks mamba-ssm / causal-conv1d whenever they
import, even for CPU tensors, so the reference runs in a subprocess where both are hidden. Ours
runs the Triton scan (TF32 / bf16 products), so logits are compared by the largest error relative
to the largest reference logit.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_loading import load_nemotron_h
from lightning_viper.ops import kernels, pieces
from lightning_viper.sequence import SequenceState
from tests.backbones.test_nemotron_h_helpers import hf_model, packed_state, place

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not kernels.mamba_kernels_available(), reason="needs CUDA + mamba-ssm + causal-conv1d"),
]

# Triton's tl.dot needs every matrix side >= 16: head dim, state size and chunk are raised from TINY
KERNEL_SHAPES = dict(mamba_head_dim=16, ssm_state_size=16, chunk_size=16)
TOL = {"float32": 1e-2, "bfloat16": 6e-2}  # max |err| / max |ref|
SEGMENTS = [[20, 9], [33]]  # packed rows for the prefill test
PROMPT, FOLLOW = 19, 6  # the decode test: 2 rows of a 19-token prompt + 6 teacher-forced tokens

REFERENCE = """
import json, sys
sys.modules["mamba_ssm"] = None  # hide the kernels: transformers falls back to its torch path
sys.modules["causal_conv1d"] = None
import torch
from transformers import NemotronHForCausalLM
path, tokens_file, out = sys.argv[1:]
model = NemotronHForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
with torch.no_grad():
    logits = [model(torch.tensor([seq])).logits[0] for seq in json.load(open(tokens_file))]
torch.save(logits, out)
"""


def _token_lists() -> list[list[int]]:
    """Every sequence the reference scores: the packed segments in order, then the 2 decode rows."""
    g = torch.Generator().manual_seed(0)
    segments = [torch.randint(1, 97, (n,), generator=g).tolist() for row in SEGMENTS for n in row]
    decode = [torch.randint(1, 97, (PROMPT + FOLLOW,), generator=g).tolist() for _ in range(2)]
    return segments + decode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, list[list[int]], list[Tensor]]:
    """(checkpoint dir, token lists, transformers' CPU logits (T, V) for each list)."""
    root: Path = tmp_path_factory.mktemp("nemotron_gpu")
    hf_model(seed=5, **KERNEL_SHAPES).save_pretrained(root / "tiny")
    tokens = _token_lists()
    (root / "tokens.json").write_text(json.dumps(tokens))
    cmd = [sys.executable, "-c", REFERENCE, str(root / "tiny"), str(root / "tokens.json"), str(root / "ref.pt")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"reference subprocess failed:\n{done.stderr[-3000:]}"
    return str(root / "tiny"), tokens, torch.load(root / "ref.pt")


def scaled_error(got: Tensor, ref: Tensor) -> float:
    got, ref = got.detach().float().cpu(), ref.detach().float().cpu()
    return float((got - ref).abs().max() / ref.abs().max())


def to_cuda(state: SequenceState) -> SequenceState:
    return type(state)(**{k: v.cuda() for k, v in vars(state).items()})


@pytest.mark.parametrize(
    ("dtype", "prefill_chunk", "index_limit"),
    [
        ("float32", None, None),
        ("bfloat16", None, None),
        ("float32", 7, None),
        ("bfloat16", 7, None),
        ("float32", None, 4096),  # conv and scan calls split into pieces of 10 and 16 tokens
    ],
)
def test_packed_rows_match_transformers(checkpoint, monkeypatch, dtype, prefill_chunk, index_limit):
    if index_limit is not None:
        monkeypatch.setattr(pieces, "INT32_LIMIT", index_limit)
    path, tokens, refs = checkpoint
    ours = load_nemotron_h(path, dtype=dtype, kernels="cuda", prefill_chunk=prefill_chunk).cuda().eval()
    state = packed_state(SEGMENTS)
    per_row, k = [], 0
    for row in SEGMENTS:
        per_row.append([(tokens[k + i], refs[k + i]) for i in range(len(row))])
        k += len(row)
    ids = place([[t for seg, _ in row for t in seg] for row in per_row], state)
    with torch.no_grad():
        logits = ours.logits(ours(ours.embed(ids.cuda()), to_cuda(state)).hidden).float().cpu()  # (B, T, V)
    for r, row in enumerate(per_row):
        end = state.length
        for seg, ref in reversed(row):
            err = scaled_error(logits[r, end - len(seg) : end], ref)
            what = f"{dtype} chunk={prefill_chunk} limit={index_limit} row {r}, {len(seg)} tokens"
            log.info("%s: err %.2e", what, err)
            assert err < TOL[dtype], f"{what}: scaled error {err:.2e}"
            end -= len(seg)


@torch.no_grad()
def test_cached_decoding_matches_transformers_full_forward(checkpoint):
    """Prefill + per-token decode (conv / state-update kernels) against a full forward on the CPU."""
    path, tokens, refs = checkpoint
    ours: NemotronHBackbone = load_nemotron_h(path, kernels="cuda").cuda().eval()
    seqs = torch.tensor(tokens[-2:])  # (2, PROMPT + FOLLOW)
    cache = ours.new_cache(2)
    out = ours(ours.embed(seqs[:, :PROMPT].cuda()), to_cuda(packed_state([[PROMPT], [PROMPT]])), cache=cache)
    steps = [ours.logits(out.hidden[:, -1])]
    for i in range(PROMPT, PROMPT + FOLLOW - 1):
        steps.append(ours.logits(ours.decode(ours.embed(seqs[:, i : i + 1].cuda()), cache)[:, -1]))
    got = torch.stack(steps, 1)  # (2, FOLLOW, V): predictions after each prefix
    ref = torch.stack(refs[-2:])[:, PROMPT - 1 : -1]  # (2, FOLLOW, V)
    err = scaled_error(got, ref)
    log.info("cached decoding: err %.2e", err)
    assert err < TOL["float32"], f"scaled error {err:.2e}"


@pytest.mark.parametrize(
    ("dtype", "prefill_chunk"), [("float32", None), ("bfloat16", None), ("float32", 7), ("bfloat16", 7)]
)
def test_unpadded_rows_match_transformers(checkpoint, dtype, prefill_chunk):
    """Rows of one unpadded sample each take the whole-row path (no mask products, no run
    labels, the conv and scan reading in_proj's column slices, the state carried by the kernels
    between chunks) with the fused RMSNorm: the same logits as transformers."""
    path, tokens, refs = checkpoint
    ours = load_nemotron_h(path, dtype=dtype, kernels="cuda", prefill_chunk=prefill_chunk).cuda().eval()
    seqs = torch.tensor(tokens[-2:])  # (2, PROMPT + FOLLOW)
    state = to_cuda(packed_state([[seqs.shape[1]]] * 2))
    with torch.no_grad():
        logits = ours.logits(ours(ours.embed(seqs.cuda()), state).hidden).float().cpu()
    err = scaled_error(logits, torch.stack(refs[-2:]))
    log.info("unpadded rows %s chunk=%s: err %.2e", dtype, prefill_chunk, err)
    assert err < TOL[dtype], f"scaled error {err:.2e}"


def test_whole_row_gradients_match_the_torch_path(checkpoint):
    """Training on unpadded rows (kernels on strided slices, fused norms) gives the gradients of
    the plain-PyTorch path on the CPU, for every parameter."""
    path, tokens, _ = checkpoint
    seqs = torch.tensor(tokens[-2:])
    state = packed_state([[seqs.shape[1]]] * 2)
    grads = []
    for kernels_, device in (("cuda", "cuda"), ("torch", "cpu")):
        model = load_nemotron_h(path, kernels=kernels_).to(device).train()
        st = to_cuda(state) if device == "cuda" else state
        loss = model.logits(model(model.embed(seqs.to(device)), st).hidden).float().square().mean()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    worst = max((scaled_error(grads[0][n], grads[1][n]), n) for n in grads[1])
    log.info("whole-row gradients: worst scaled error %.2e (%s)", *worst)
    assert worst[0] < TOL["float32"], worst
