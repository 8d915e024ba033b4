"""Fine-tunes an editor's autoencoder decoder further, its encoder (and so its latents) frozen.

    python examples/shapes/finetune_decoder.py outputs/shapes --shape-weight 4          # in place
    python examples/shapes/finetune_decoder.py shapes --output vae-ft --dtype float16

The recipe's ``text_to_image`` stage fine-tunes the decoder once
(``RecipeConfig.decoder_steps``); this continues from a finished editor's decoder, with
:func:`~instructedit.worlds._models.finetune_decoder` on batches of freshly rendered scenes. The
encoder stays as it is, so the editor (and the text-to-image model that shares the autoencoder)
keeps working unchanged: only its decoded images move. ``--shape-weight`` weighs the loss of the
pixels the shapes cover, the few an edit must keep. This is how the embedded default's decoder
was made (its model card has the exact call).

Prints the autoencoder's floor (:func:`~instructedit.worlds.evaluation.round_trip_edits`: each
held-out test edit's ground truth, encoded and decoded, judged by the oracle) before and after.
The model's ``vae`` folder is replaced when training has finished (``--output`` writes elsewhere),
by renames that a rerun completes if a kill falls between them; a checkpoint beside it lets a
killed run continue where it stopped, and a record of its options keeps another run's checkpoint
from being taken for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from instructedit._files import recover_dir, replace_dir, swap_dirs


def floor(vae: torch.nn.Module, scenes: int) -> dict[str, float]:
    """The round-trip floor's unchanged-region error, per family and over all."""
    from instructedit.worlds.evaluation import held_out_edits, oracle_summary, round_trip_edits

    edits = held_out_edits(scenes, seed=0)
    summary = oracle_summary(edits, round_trip_edits(vae, edits))
    return {family: row["unchanged_error"] for family, row in summary.items()}


def is_autoencoder(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def stored_dtype(folder: Path) -> str:
    """The dtype of the autoencoder's saved weights ("float16" or "float32")."""
    from safetensors import safe_open

    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        first = weights.get_tensor(next(iter(weights.keys())))
    return "float16" if first.dtype == torch.float16 else "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="'shapes' (the embedded default), an editor folder or a recipe run's folder"
    )
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps")
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
        help="autoencoder folder to write (default: the model's own vae folder, replaced)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        help="dtype of the saved weights (default: the model's)",
    )
    parser.add_argument(
        "--scenes", type=int, default=200, help="held-out edits the floor is read on"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.steps < 1 or args.batch_size < 1 or args.scenes < 1:
        parser.error("--steps, --batch-size and --scenes must be at least 1")
    if not (math.isfinite(args.shape_weight) and args.shape_weight >= 0):
        parser.error(f"--shape-weight must be a finite number >= 0, got {args.shape_weight}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        parser.error(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
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
    output = args.output if args.output is not None else source
    recover_dir(output)  # a replacement a kill interrupted
    if not is_autoencoder(source):
        parser.error(f"{model} holds no autoencoder (no vae/config.json)")
    if output.exists() and not is_autoencoder(output):
        parser.error(f"--output {output} exists and is not an autoencoder folder: not replacing it")
    dtype = args.dtype or stored_dtype(source)

    # A checkpoint is this run's only if the run that wrote it had the same options.
    checkpoint = output.with_name(output.name + ".decoder.pt")
    record = output.with_name(output.name + ".decoder.json")
    options = {
        "source": str(source.resolve()),
        "learning_rate": args.learning_rate,
        "shape_weight": args.shape_weight,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    if checkpoint.exists():
        found = json.loads(record.read_text()) if record.is_file() else None
        if found != options:
            parser.error(
                f"{checkpoint} is the checkpoint of another run ({found}, not {options}): delete "
                "it, or give that run's options to continue it"
            )

    from diffusers import AutoencoderKL

    from instructedit.data import write_json_atomic
    from instructedit.worlds._models import finetune_decoder

    vae = AutoencoderKL.from_pretrained(source, torch_dtype=torch.float32).to(args.device)
    before = floor(vae, args.scenes)
    write_json_atomic(record, options)
    losses = finetune_decoder(
        vae,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        shape_weight=args.shape_weight,
        checkpoint=checkpoint,
        device=args.device,
    )
    if dtype == "float16":
        vae.half().float()  # the floor of the weights as saved
    after = floor(vae, args.scenes)
    (vae.half() if dtype == "float16" else vae).save_pretrained(
        swap_dirs(output)[0], safe_serialization=True
    )
    replace_dir(output)  # by two renames
    checkpoint.unlink(missing_ok=True)
    record.unlink(missing_ok=True)

    print(f"final loss (mean of the last 50 steps) | {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    print("floor | " + " | ".join(before) + " |")
    for name, row in (("floor before", before), ("floor after", after)):
        print(f"{name} | " + " | ".join(f"{value:.4f}" for value in row.values()) + " |")
    print(f"saved | {output} ({dtype})")


if __name__ == "__main__":
    main()
