"""Which frames FastV's two rankings keep on the demo: the average attention of every instruction
token (``FastVDrop``) vs the last token's (``TokenDrop(selector="attention")``, FastV's public code).

    python scripts/fastv_probe.py [RECIPE] [CHECKPOINT] [SAMPLES]
    (defaults: recipes/demo.yaml checkpoints/demo/last.ckpt 3; after `make demo`)

Prints, per test sample, the frames of the 8 best-ranked vision tokens at layer 2 under each rule.
"""

from __future__ import annotations

import sys

import torch

from lightning_viper.compression.fastv import text_attention
from lightning_viper.inference import load_model

LAYER, TOP = 2, 8


def main(recipe: str, ckpt: str, samples: int) -> None:
    loaded = load_model(recipe, ckpt, device="cpu")
    model, data = loaded.model, loaded.data
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    per_frame = model.projector.tokens_per_frame(model.encoder.num_patches)
    with torch.no_grad():
        hidden, state, _ = model.embed_batch(batch, prompt_only=True)
        for i in range(LAYER):
            hidden = model.backbone.run_layer(i, hidden, state, None)
        average = text_attention(model.backbone, LAYER, hidden, state)  # (B, T)
        last = model.backbone.attention_scores(LAYER, hidden, state)  # (B, T)
    vision = state.vision_mask()
    for b in range(min(samples, batch.batch_size)):
        for name, scores in (("average", average), ("last", last)):
            frames = sorted((scores[b][vision[b]].topk(TOP).indices // per_frame).tolist())
            sys.stdout.write(f"sample {b} (answer {batch.meta[b].get('answer')}) {name:>7}: frames {frames}\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "recipes/demo.yaml", args[1] if len(args) > 1 else "checkpoints/demo/last.ckpt",
         int(args[2]) if len(args) > 2 else 3)  # fmt: skip
