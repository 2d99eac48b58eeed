"""``--model viper``: lmms-eval's simple-model interface over a recipe and a checkpoint.

    lmms-eval --model viper \
        --model_args config=recipes/demo.yaml,ckpt_path=checkpoints/demo/last.ckpt \
        --tasks videomme --log_samples --output_path results/

``model_args``: ``config`` (recipe YAML) and ``ckpt_path`` (a file, ``last`` or ``best``), and
optionally ``compression`` (a JSON list of stages, or a YAML/JSON file holding one, replacing the
recipe's), ``overlay`` (one more recipe file merged on top, e.g. other data settings), ``fps``,
``max_frames`` and ``num_frames`` (frame sampling; default: the recipe's datamodule) and
``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``). Each request's video is decoded with the
project's decoder; answers are greedy (TimeViper evaluates greedily).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from lightning_viper.inference import Inference, InferenceError, load_inference

log = logging.getLogger(__name__)


class ViperLMM(lmms):
    """A VideoLM checkpoint as an lmms-eval model (one video per request, batch size 1)."""

    is_simple = True

    def __init__(
        self,
        config: str,
        ckpt_path: str,
        compression: str | None = None,
        overlay: str | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        num_frames: int | None = None,
        device: str = "auto",
        **unused: Any,
    ) -> None:
        super().__init__()
        unused.pop("batch_size", None)  # lmms-eval passes its --batch_size; requests run one at a time
        if unused:
            raise ValueError(
                f"unknown model_args {sorted(unused)} for --model viper: use config, ckpt_path, compression, "
                "overlay, fps, max_frames, num_frames, device"
            )
        overrides = ["--config", str(overlay)] if overlay else []
        sampling = {"fps": fps, "max_frames": max_frames, "num_frames": num_frames}
        overrides += [f"--data.init_args.{k}={v}" for k, v in sampling.items() if v is not None]
        self.inference: Inference = load_inference(config, ckpt_path, overrides, compression, device)

    def _video(self, request: Instance) -> str:
        """The one video file of a request's document."""
        doc_to_visual, doc_id, task, split = request.args[2:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        visuals = visuals if isinstance(visuals, list) else [visuals]
        paths = [v for v in visuals if isinstance(v, str | Path)]
        if len(paths) != 1 or len(visuals) != 1:
            raise InferenceError(
                f"task {task!r} doc {doc_id}: --model viper takes exactly one video file per question, got "
                f"{[type(v).__name__ for v in visuals]}; point the task's doc_to_visual at the video's path"
            )
        return str(paths[0])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        for request in tqdm(requests, disable=self.rank != 0, desc="viper answering"):
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0.0) > 0.0:
                log.warning("task %s asks for sampling; --model viper decodes greedily", request.args[4])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            answer = self.inference.ask(self._video(request), context, gen_kwargs.get("max_new_tokens"), until)
            answers.append(answer.text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer.text)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(negative log-likelihood of the continuation, whether it is the greedy one)`` per request,
        for ``output_type: multiple_choice`` and ``loglikelihood`` tasks.

        lmms-eval ranks multiple-choice options by the smallest first value (``np.argmin`` in
        ``ConfigurableTask.process_results``: its models return a loss), so this is the summed
        negative log-probability of the continuation's tokens. Each pair travels inside a
        ``GenerationResult``: lmms-eval 0.7.3's ``unwrap_generation_output`` turns a bare
        ``(float, bool)`` into its string and the task's scoring then fails."""
        results: list[GenerationResult] = []
        last: tuple[str, Any] | None = None  # the choices of one question share its video
        for request in tqdm(requests, disable=self.rank != 0, desc="viper scoring"):
            if len(request.args) < 6:
                raise NotImplementedError(
                    "--model viper scores continuations after a video; acc_mutual_info needs text-only "
                    "requests: use acc / acc_norm in the task's metric_list"
                )
            context, target, _, doc_id, task, split = request.args[:6]
            continuation = target if isinstance(target, str) else str(target(self.task_dict[task][split][doc_id]))
            path = self._video(request)
            if last is None or last[0] != path:
                last = (path, self.inference.decode(path).frames)
            logprob, greedy = self.inference.loglikelihood(last[1], context, continuation)
            results.append(GenerationResult(text=(-logprob, greedy)))  # type: ignore[arg-type, unused-ignore]
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("--model viper answers single-turn questions; multi-round tasks are not supported")
