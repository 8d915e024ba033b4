"""The Trainer's outputs: metrics, validation edits and the exported editor."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from instructedit._launch import job_state
from instructedit.lora import has_lora, merged_unet, save_lora
from instructedit.sampling import scheduler_from_name

__all__ = ["TrainerOutputs"]


class TrainerOutputs:
    """What a :class:`~instructedit.Trainer` writes besides checkpoints: ``metrics.jsonl``,
    validation edits and the exported pipeline (a mixin of the Trainer)."""

    config: Any
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    text_encoder_2: Any
    tokenizer_2: Any
    noise_scheduler: Any
    xl: bool
    ema: Any
    text_encoder_ema: Any

    def _truncate_metrics(self, step: int, accelerator: Any) -> None:
        path = self.config.path / "metrics.jsonl"
        if not accelerator.is_main_process or not path.is_file():
            return
        kept = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step
        ]
        staging = path.with_name(".metrics.jsonl.partial")
        staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        staging.replace(path)

    def _log(self, record: dict[str, Any], accelerator: Any, tracker: str | None) -> None:
        if not accelerator.is_main_process:
            return
        with (self.config.path / "metrics.jsonl").open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        if tracker is not None:
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    @staticmethod
    def _averaged(model: Any, ema: Any) -> Any:
        """A copy of ``model`` holding the averaged weights of ``ema`` (if any), in eval mode."""
        copied = copy.deepcopy(model)
        if ema is not None:
            ema.copy_to(trained_parameters(copied))
        return copied.eval()

    def _export_pipeline(self, unet: Any | None = None, text_encoder: Any | None = None) -> Any:
        """The pipeline of the averaged weights (the raw ones without EMA) of ``unet`` and, when it
        trains, ``text_encoder`` (the trainer's own by default); a frozen encoder is shared."""
        from instructedit.pipeline import EditPipeline

        unet = self._averaged(unet if unet is not None else self.unet, self.ema)
        text_encoder = text_encoder if text_encoder is not None else self.text_encoder
        if self.config.train_text_encoder:
            text_encoder = self._averaged(text_encoder, self.text_encoder_ema)
        # By default the paper's Euler ancestral, whose diffusers step cannot take a clean-latent
        # prediction; plain Euler can.
        name = self.config.sampler or (
            "euler"
            if self.noise_scheduler.config.prediction_type == "sample"
            else "euler_ancestral"
        )
        scheduler = scheduler_from_name(name, self.noise_scheduler.config)
        xl: dict[str, Any] = {}
        if self.xl:  # trained with the empty instruction where dropped, not zeros
            xl = {
                "text_encoder_2": self.text_encoder_2,
                "tokenizer_2": self.tokenizer_2,
                "force_zeros_for_empty_prompt": False,
            }
        return EditPipeline(
            unet=unet,
            vae=self.vae,
            text_encoder=text_encoder,
            tokenizer=self.tokenizer,
            scheduler=scheduler,
            **xl,
        )

    def validate(
        self,
        step: int,
        unet: Any | None = None,
        accelerator: Any | None = None,
        *,
        text_encoder: Any | None = None,
    ) -> list[Path]:
        """Edits ``validation_image`` with each validation prompt using the EMA weights (of
        ``unet``, and of ``text_encoder`` when it trains; the trainer's own by default); writes
        ``validation/step-XXXXXXX/NN.png`` and returns the paths."""
        if accelerator is not None and not accelerator.is_main_process:
            return []
        if self.config.validation_image is None:
            return []
        pipe = self._export_pipeline(unet, text_encoder)
        folder = self.config.path / "validation" / f"step-{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for number, prompt in enumerate(self.config.validation_prompts):
            image = pipe(
                self.config.validation_image,
                prompt,
                num_inference_steps=self.config.validation_steps,
                generator=torch.Generator().manual_seed(self.config.seed),
                progress=False,
            ).images[0]
            path = folder / f"{number:02d}.png"
            image.save(path)
            written.append(path)
        return written

    def export(self, directory: str | Path | None = None) -> Path:
        """Writes the EMA weights (or the raw ones without EMA; the text encoder's too when it
        trained) as an ``EditPipeline`` folder in the
        diffusers layout, loadable by diffusers' ``StableDiffusionInstructPix2PixPipeline`` too.
        Its scheduler is ``config.sampler`` on the training noise schedule and prediction type
        (by default Euler ancestral; plain Euler for ``"sample"``, which diffusers' ancestral
        step cannot take). Its ``guidance_config.json`` holds the paper's scales (7.5, 1.5; an
        SDXL editor diffusers' SDXL defaults, 5 and 1.5); write tuned ones with :func:`~instructedit.guidance.save_guidance_config`.

        A LoRA run (``config.lora_rank``) writes the merged weights there and the adapter in its
        ``lora`` subfolder (:mod:`instructedit.lora`): diffusers' ``load_lora_weights`` and
        :meth:`EditPipeline.load_lora_weights <instructedit.EditPipeline.load_lora_weights>` read
        it onto the base editor."""
        target = Path(directory) if directory is not None else self.config.path / "pipeline"
        job = job_state()
        if job.is_main_process:
            pipe = self._export_pipeline()
            adapted = pipe.unet
            if has_lora(adapted):
                pipe.unet = merged_unet(adapted)
            pipe.save_pretrained(target)
            if has_lora(adapted):
                config = self.config
                save_lora(
                    target / "lora",
                    adapted,
                    rank=int(config.lora_rank or 0),
                    alpha=config.lora_alpha,
                    targets=config.lora_targets,
                    conv_in=config.lora_train_conv_in,
                )
        job.wait_for_everyone()
        return target


def trained_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters of ``model`` that train (all of them, or a LoRA run's adapter and input
    convolution)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
