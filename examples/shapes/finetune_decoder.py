"""Fine-tunes an editor's autoencoder decoder further, its encoder (and so its latents) frozen.

    python examples/shapes/finetune_decoder.py outputs/shapes --shape-weight 4          # in place
    python examples/shapes/finetune_decoder.py shapes --output vae-ft --dtype float16

The recipe's ``text_to_image`` stage fine-tunes the decoder once
(``RecipeConfig.decoder_steps``); this continues from a finished editor's decoder, with
:func:`~instructedit.worlds._models.finetune_decoder` and the same batches of rendered scenes. The
encoder stays as it is, so the editor (and the text-to-image model that shares the autoencoder)
keeps working unchanged: only its decoded images move. ``--shape-weight`` weighs the loss of the
pixels the shapes cover, the few an edit must keep. This is how the embedded default's decoder
was made (its model card has the exact call).

Prints the autoencoder's floor (:func:`~instructedit.worlds.evaluation.round_trip_edits`: each
held-out test edit's ground truth, encoded and decoded, judged by the oracle) before and after.
The model's ``vae`` folder is replaced atomically when training has finished (``--output``
writes elsewhere); a checkpoint beside it lets a killed run continue where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch


def floor(vae: torch.nn.Module, scenes: int) -> dict[str, float]:
    """The round-trip floor's unchanged-region error, per family and over all."""
    from instructedit.worlds.evaluation import held_out_edits, oracle_summary, round_trip_edits

    edits = held_out_edits(scenes, seed=0)
    summary = oracle_summary(edits, round_trip_edits(vae, edits))
    return {family: row["unchanged_error"] for family, row in summary.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="'shapes' (the embedded default), an editor folder or a recipe run's folder"
    )
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps (batch 64)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--shape-weight", type=float, default=4.0, help="extra loss weight of shape pixels"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the scenes' and the posterior noise's seed (the recipe's first fine-tuning used the "
        "run's, 0 by default: another draws scenes it did not see)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--output",
        type=Path,
        help="folder to write the decoder's autoencoder to (default: in place)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="dtype of the saved weights",
    )
    parser.add_argument(
        "--scenes", type=int, default=200, help="held-out edits the floor is read on"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from diffusers import AutoencoderKL

    from instructedit.worlds._models import finetune_decoder

    if args.model == "shapes":
        from instructedit.default import default_model_dir

        model = Path(default_model_dir())
        if args.output is None:
            parser.error("the embedded default is part of the package: give --output")
    else:
        model = Path(args.model)
        if (model / "editor" / "model" / "model_index.json").is_file():
            model = model / "editor" / "model"
    source = model / "vae"
    if not (source / "config.json").is_file():
        parser.error(f"{model} holds no autoencoder (no vae/config.json)")
    if args.steps < 1 or args.batch_size < 1 or args.scenes < 1:
        parser.error("--steps, --batch-size and --scenes must be at least 1")
    output = args.output if args.output is not None else source

    vae = AutoencoderKL.from_pretrained(source, torch_dtype=torch.float32).to(args.device)
    before = floor(vae, args.scenes)
    try:
        losses = finetune_decoder(
            vae,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            shape_weight=args.shape_weight,
            checkpoint=output.with_name(output.name + ".decoder.pt"),
            device=args.device,
        )
    except ValueError as error:
        parser.error(str(error).replace("shape_weight", "--shape-weight"))
    after = floor(vae, args.scenes)

    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if args.dtype == "float16":
        vae.half()
    vae.save_pretrained(staging, safe_serialization=True)
    if output.exists():
        retired = output.with_name(output.name + ".old")
        shutil.rmtree(retired, ignore_errors=True)
        output.rename(retired)
        staging.rename(output)
        shutil.rmtree(retired)
    else:
        staging.rename(output)
    output.with_name(output.name + ".decoder.pt").unlink(missing_ok=True)

    print(f"final loss (mean of the last 50 steps) | {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    print("floor | " + " | ".join(before) + " |")
    for name, row in (("floor before", before), ("floor after", after)):
        print(f"{name} | " + " | ".join(f"{value:.4f}" for value in row.values()) + " |")
    print(f"saved | {output}")


if __name__ == "__main__":
    main()
