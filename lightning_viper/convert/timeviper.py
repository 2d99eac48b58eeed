"""``viper convert timeviper SRC DST``: a TimeViper reference checkpoint -> an exported directory
plus a recipe that runs it (``lightning test --config DST/recipe.yaml``).

SRC holds the reference's plain state dict (one ``.safetensors`` file, or a ``.pt`` / ``.pth`` /
``.bin`` file read with ``weights_only=True``), its LLM config ``config.json`` (``model_type:
"nano"``) and, optionally, the tokenizer files. The model is built from typed specs (SigLIP tower
at the checkpoint's shape, ToMe + MLP projector, Nemotron-H backbone, the ``pdrop_type`` stages,
all with the reference's rules) and every source tensor is mapped by name
(:mod:`lightning_viper.convert.timeviper_keys`) and assigned strictly. DST gets the exported
directory (:mod:`lightning_viper.export.directory`), ``recipe.yaml`` and
``conversion_report.json`` (what each stage is, and every dropped source key with the reason).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from lightning_viper.backbones.loading import CheckpointError, load_strict
from lightning_viper.convert.timeviper_config import backbone_spec, parse_pdrop
from lightning_viper.convert.timeviper_keys import HEAD, VISION, map_state
from lightning_viper.convert.timeviper_recipe import write_recipe
from lightning_viper.export.directory import build, save
from lightning_viper.text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REPORT_FILE = "conversion_report.json"


def find_weights(root: Path) -> Path:
    """The one state-dict file in ``root``."""
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(files) != 1:
        raise CheckpointError(
            f"{str(root)!r} must hold exactly one state-dict file ({', '.join(WEIGHT_SUFFIXES)}), found "
            f"{[p.name for p in files]}"
        )
    return files[0]


def read_weights(file: Path) -> dict[str, Tensor]:
    """A plain state dict from safetensors or a torch file (``weights_only=True``: no code runs)."""
    if file.name.endswith(".safetensors"):
        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # pickled objects other than tensors, or not a torch file
        raise CheckpointError(
            f"{str(file)!r} is not a plain state dict readable with weights_only=True: {error}"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{str(file)!r} does not hold a plain {{name: tensor}} state dict")
    return state


def vision_spec(state: dict[str, Tensor], num_heads: int, feature_layer: int) -> dict[str, Any]:
    """The SigLIP tower's spec at the shape of the checkpoint's timm weights."""
    try:
        width, _, patch, _ = state[VISION + "patch_embed.proj.weight"].shape
        positions = state[VISION + "pos_embed"].shape[-2]
        inter = state[VISION + "blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise CheckpointError(f"no vision tower in the checkpoint: {error.args[0]!r} is missing") from error
    depth = 1 + max(int(k[len(VISION) :].split(".")[1]) for k in state if k.startswith(VISION + "blocks."))
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointError(f"{VISION}pos_embed has {positions} positions: not a square patch grid")
    if width % num_heads:
        raise CheckpointError(f"vision width {width} is not divisible by vision_heads={num_heads}")
    args = {
        "hidden_size": int(width),
        "num_layers": depth,
        "num_heads": num_heads,
        "intermediate_size": int(inter),
        "patch_size": int(patch),
        "image_size": side * int(patch),
        "feature_layer": feature_layer,
        "freeze": True,
        "hidden_act": "gelu",  # timm's vit_so400m_patch14_siglip_* set no act_layer: exact GELU, not tanh
    }
    return {"class_path": "lightning_viper.encoders.SiglipEncoder", "init_args": args}


def convert_timeviper(
    src: str,
    dst: str,
    tokenizer: str | None = None,
    vision_heads: int = 16,
    feature_layer: int = -2,
    tokens_per_frame: int = 16,
    tome_heads: int = 16,
    fps: float = 1.0,
    max_frames: int = 256,
) -> dict[str, Any]:
    """Convert a TimeViper reference checkpoint (module docstring).

    Args:
        src: directory with the state-dict file and the LLM ``config.json`` (tokenizer files optional).
        dst: output directory (exported model, ``recipe.yaml``, ``conversion_report.json``).
        tokenizer: a tokenizer directory when SRC has none.
        vision_heads: attention heads of the SigLIP tower (not in the weights; so400m: 16).
        feature_layer: the tower layer whose output is used (reference: -2, block 25 of 27).
        tokens_per_frame, tome_heads: the reference's ToMe (16 tokens per frame, 16 heads).
        fps, max_frames: frame sampling written to the recipe and processor settings.
    """
    root = Path(src).expanduser()
    if not (root / "config.json").is_file():
        raise CheckpointError(f"{str(root)!r} has no config.json (the TimeViper LLM config, model_type 'nano')")
    config = json.loads((root / "config.json").read_text())
    weights = find_weights(root)
    state = read_weights(weights)
    stages = parse_pdrop(config)
    encoder = vision_spec(state, vision_heads, feature_layer)
    backbone = backbone_spec(config)
    if backbone["init_args"].get("tie_word_embeddings") and HEAD + "weight" in state:
        backbone["init_args"]["tie_word_embeddings"] = False  # the checkpoint has its own head: keep it
    spec = {
        "class_path": "lightning_viper.module.VideoLM",
        "init_args": {
            "encoder": encoder,
            "projector": {
                "class_path": "lightning_viper.projectors.ToMeProjector",
                "init_args": {"tokens_per_frame": tokens_per_frame, "num_heads": tome_heads, "rule": "reference"},
            },
            "backbone": backbone,
            "compression": [s.spec() for s in stages],
            "trainable": ["projector", "backbone", "compression"],
        },
    }
    model = build(spec)
    ours = model.state_dict()
    tower = next(k for k in ours if k.startswith("encoder.") and k.endswith("embeddings.patch_embedding.weight"))
    tower = tower[: -len("embeddings.patch_embedding.weight")]
    kept = len({k.split(".")[len(tower.split(".")) + 1] for k in ours if k.startswith(tower + "encoder.layers.")})
    mapping = map_state(state, tower, kept, [i for i, s in enumerate(stages) if s.transfer], "projector.mlp.")
    load_strict(model, mapping.tensors, source=f"TimeViper checkpoint {str(weights)!r} (after renaming)")
    model.load_state_dict(mapping.tensors, strict=True, assign=True)
    tok_dir = tokenizer or (str(root) if any((root / f).is_file() for f in TOKENIZER_FILES) else None)
    tok = load_tokenizer(tok_dir) if tok_dir is not None else None
    if tok is not None and len(tok) > model.backbone.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {len(tok)} tokens, the checkpoint's vocabulary {model.backbone.vocab_size}"
        )
    image_size = int(encoder["init_args"]["image_size"])
    out = save(model, dst, spec, tok, {"image_size": image_size, "fps": fps, "max_frames": max_frames})
    recipe = write_recipe(out, image_size, fps, max_frames, has_tokenizer=tok is not None)
    report = {
        "source": str(weights),
        "exported": str(out.resolve()),
        "recipe": str(recipe),
        "stages": [s.spec() for s in stages],
        **mapping.report(),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    for key, why in mapping.dropped.items():
        log.info("dropped %s: %s", key, why)
    log.info("converted %d source tensors into %s (%s)", len(state), out, model.strategy_name())
    if tok is None:
        log.warning("no tokenizer in %s and none given: set VIPER_TOKENIZER for the recipe", root)
    return {k: report[k] for k in ("exported", "recipe", "mapped")} | {"dropped": len(mapping.dropped)}
