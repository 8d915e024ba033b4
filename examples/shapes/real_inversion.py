"""Virtual inversion against DDIM and null-text inversion on ShapesWorld: rendered scenes play the
real images; reconstruction error and time per image.

    python examples/shapes/real_inversion.py --output outputs/shapes-t2i            # train, then score
    python examples/shapes/real_inversion.py --output outputs/shapes-t2i --scenes 8 # a quick look

A ShapesWorld text-to-image model is trained first (``--steps`` steps, resumable: rerun to
continue), on the embedded default's autoencoder and a copy of its text encoder, the recipe's
UNet. Then each held-out test scene (seed 0) is brought into it from its caption by each method
(20 steps, guidance 7.5) and reconstructed with the target prompt equal to the source: the
error is the mean absolute pixel difference, in [0, 1], from the scene through the autoencoder
(what an exact method returns), with the time per image.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
from diffusers import DDPMScheduler

import instructedit
from instructedit.components import SD_SCHEDULER_CONFIG, vae_scale_factor
from instructedit.p2p import PromptToPrompt
from instructedit.worlds._models import shapes_unet, train_text_to_image
from instructedit.worlds.evaluation import held_out_edits
from instructedit.worlds.recipe._base_models import text_to_image_pipeline
from instructedit.worlds.shapes import caption, render


def text_to_image(folder: Path, steps: int) -> PromptToPrompt:
    model = folder / "model"
    if not (model / "model_index.json").is_file():
        editor = instructedit.load_default()
        vae, text_encoder = editor.vae, copy.deepcopy(editor.text_encoder)
        unet = shapes_unet(0, sample_size=32 // vae_scale_factor(vae))
        train_text_to_image(
            unet,
            text_encoder,
            editor.tokenizer,
            vae,
            DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
            steps=steps,
            checkpoint=folder / "text_to_image.pt",
        )
        text_to_image_pipeline(unet, text_encoder, editor.tokenizer, vae).save_pretrained(
            model, safe_serialization=True
        )
    return PromptToPrompt.from_pretrained(model, scheduler="ddim")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/shapes-t2i"))
    parser.add_argument("--steps", type=int, default=1500, help="text-to-image training steps")
    parser.add_argument("--scenes", type=int, default=40)
    args = parser.parse_args()
    p2p = text_to_image(args.output, args.steps)
    scenes = [edit.source for edit in held_out_edits(args.scenes, seed=0)]
    print(f"{len(scenes)} held-out test scenes (seed 0), 20 steps, guidance 7.5, reconstruction")
    print()
    print("| method | error from the autoencoded scene | error from the scene | s per image |")
    print("| --- | --- | --- | --- |")
    for method in ("virtual", "ddim", "null_text"):
        errors, raw_errors, seconds = [], [], 0.0
        for scene in scenes:
            image, text = render(scene), caption(scene)
            start = time.perf_counter()
            out = p2p.edit_real(
                image,
                text,
                text,
                method=method,
                num_inference_steps=20,
                guidance_scale=7.5,
                source_guidance_scale=7.5,
                output_type="np",
                progress=False,
            )
            seconds += time.perf_counter() - start
            autoencoded = p2p.edit_real(
                image, text, text, num_inference_steps=1, output_type="np", progress=False
            ).source[0]
            errors.append(float(np.abs(out.target[0] - autoencoded).mean()))
            raw = np.asarray(image, np.float32) / 255
            raw_errors.append(float(np.abs(out.target[0] - raw).mean()))
        print(
            f"| {method} | {np.mean(errors):.4f} | {np.mean(raw_errors):.4f} | "
            f"{seconds / len(scenes):.3f} |"
        )


if __name__ == "__main__":
    main()
