"""``viper ask --config RECIPE --ckpt_path CKPT video.mp4 "question"``: one answer, and what it cost.

Prints the answer, the frames decoded, the vision tokens before and after compression, and the
prefill and total time (a cold, single call: it includes one-time costs a benchmark warms away;
``viper bench prefill`` measures the steady state). An unreadable video, a missing checkpoint or
a recipe that does not build exits 2 with a message saying what to fix.
"""

from __future__ import annotations

import logging

from lightning_viper.inference import Answer, InferenceError, load_inference

log = logging.getLogger(__name__)


def ask(
    video: str,
    question: str,
    recipe: str | None = None,
    ckpt_path: str = "last",
    compression: str | None = None,
    max_new_tokens: int | None = None,
    device: str = "auto",
) -> None:
    """Answer a question about a video file with a trained checkpoint.

    Args:
        video: the video file (mp4, mkv, webm, avi, mov).
        question: the question, as the recipe's prompt template takes it.
        recipe: the recipe the checkpoint was trained with (on the command line: --config).
        ckpt_path: a checkpoint file, or last / best in the recipe's ModelCheckpoint dirpath.
        compression: a JSON list of compression stages (or a YAML/JSON file) replacing the recipe's.
        max_new_tokens: generation budget (default: the recipe's model.init_args.max_new_tokens).
        device: auto, cpu, cuda or cuda:N.
    """
    try:
        if recipe is None:
            raise InferenceError("pass the recipe the checkpoint was trained with: viper ask --config RECIPE ...")
        inference = load_inference(recipe, ckpt_path, compression=compression, device=device)
        answer = inference.ask(video, question, max_new_tokens)
    except InferenceError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
    print(format_answer(answer))


def format_answer(answer: Answer) -> str:
    """The answer and its figures, one per line."""
    lines = [
        f"answer: {answer.text}",
        f"frames: {answer.frames}",
        f"vision tokens: {answer.vision_tokens} -> {answer.vision_tokens_final} after compression",
        f"prompt tokens: {answer.prompt_tokens}",
    ]
    lines += [f"  stage at layer {s['layer']}: {s['before']} -> {s['after']} vision tokens" for s in answer.stages]
    lines += [
        f"decode: {answer.decode_ms:.1f} ms",
        f"prefill: {answer.prefill_ms:.1f} ms",
        f"total: {answer.total_ms:.1f} ms",
    ]
    return "\n".join(lines)
