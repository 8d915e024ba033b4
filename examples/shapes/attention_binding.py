"""Does a model's cross-attention find the shape a phrase names?

    python examples/shapes/attention_binding.py outputs/shapes                 # the run's editor
    python examples/shapes/attention_binding.py outputs/shapes --text-to-image
    python examples/shapes/attention_binding.py MODEL_FOLDER --edits 200 --timesteps 900 500 100

For held-out two-shape scenes whose edit names one shape (recolours and removals), runs the model's
UNet once per noise level on the scene, noised to that timestep: an editor (8 input channels)
with the edit's instruction and the scene as its input image, a text-to-image model (4) with the
scene's caption. :class:`~instructedit.p2p.AttentionStore` keeps the cross-attention maps; for
the named shape's kind word ("square"), per attention resolution, it prints the attention's
*concentration* on that shape: the share of the word's attention inside the shape's region
divided by the region's share of the image. 1 is a flat map that ignores where the shape is; a
map on the shape alone would reach ``ceiling`` (1 / the region's share, averaged the same way).
An editor has to find the shape an instruction names to recolour or remove only that one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from instructedit.attention import attention_control
from instructedit.components import encode_prompts, load_components
from instructedit.images import pil_to_tensor
from instructedit.p2p import AttentionStore, word_token_indices
from instructedit.worlds.evaluation import held_out_edits
from instructedit.worlds.shapes import caption, region_masks, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a run folder, or a pipeline folder")
    parser.add_argument(
        "--text-to-image", action="store_true", help="a run's text-to-image model, not its editor"
    )
    parser.add_argument("--edits", type=int, default=60, help="two-shape edits to read")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[800, 500, 200])
    parser.add_argument("--seed", type=int, default=0, help="held-out scenes' seed")
    args = parser.parse_args()

    model = args.model
    if not (model / "model_index.json").is_file():  # a run folder
        model = model / ("text_to_image" if args.text_to_image else "editor") / "model"
    parts = load_components(model)
    unet, vae, text_encoder, tokenizer = (
        parts["unet"],
        parts["vae"],
        parts["text_encoder"],
        parts["tokenizer"],
    )
    editor = unet.config.in_channels == 2 * vae.config.latent_channels
    noise_schedule = DDPMScheduler.from_config(parts["scheduler"].config)
    edits = [
        e
        for e in held_out_edits(max(8, 8 * args.edits), seed=args.seed)
        if e.family in ("recolour", "remove") and len(e.source.shapes) == 2
    ][: args.edits]
    if not edits:
        raise SystemExit("no two-shape recolour or removal among the held-out scenes")
    size = render(edits[0].source).size[0]
    concentration: dict[tuple[int, tuple[int, int]], list[float]] = {}
    ceiling: dict[tuple[int, int], list[float]] = {}
    read = 0
    for number, edit in enumerate(edits):
        assert edit.shape_index is not None
        kind = edit.source.shapes[edit.shape_index].kind
        text = edit.instruction if editor else caption(edit.source)
        if kind not in text.split(" "):  # "make it blue": no word names the shape
            continue
        tokens = word_token_indices(text, kind, tokenizer)
        read += 1
        region = torch.from_numpy(region_masks(edit.source, size)[edit.shape_index])[None, None]
        with torch.no_grad():
            image = vae.encode(pil_to_tensor([render(edit.source)])).latent_dist.mode()
        embedding = encode_prompts(
            tokenizer, text_encoder, [text], device=image.device, dtype=image.dtype
        )
        noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(number))
        for timestep in args.timesteps:
            t = torch.tensor([timestep])
            noisy = noise_schedule.add_noise(image * vae.config.scaling_factor, noise, t)
            store = AttentionStore("cond")
            with attention_control(unet, store, latent_size=tuple(image.shape[2:])) as state:
                state.set_step(0, 1, ("cond",))
                with torch.no_grad():
                    unet(
                        torch.cat([noisy, image], 1) if editor else noisy,
                        t,
                        encoder_hidden_states=embedding,
                    )
            for resolution in store.resolutions():
                word = store.aggregate(resolution)[0][..., tokens].sum(-1)
                word = word / word.sum()
                share = torch.nn.functional.adaptive_avg_pool2d(region, resolution)[0, 0]
                concentration.setdefault((timestep, resolution), []).append(
                    float((word * share).sum() / share.mean())
                )
                if timestep == args.timesteps[0]:
                    ceiling.setdefault(resolution, []).append(float(share.max() / share.mean()))
    kind_name = "editor, the instruction" if editor else "text-to-image model, the caption"
    print(f"model | {model} ({kind_name}); {read} edits")
    print("concentration | timestep | resolution | mean | ceiling")
    for (timestep, resolution), values in sorted(concentration.items(), key=lambda kv: -kv[0][0]):
        print(
            f"concentration | {timestep} | {resolution[0]}x{resolution[1]} | "
            f"{np.mean(values):.2f} | {np.mean(ceiling[resolution]):.1f}"
        )


if __name__ == "__main__":
    main()
