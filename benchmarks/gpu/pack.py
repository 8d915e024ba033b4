"""Packs what ``editors.py`` needs from a ShapesWorld run into one small folder for a GPU lease.

    python benchmarks/gpu/pack.py outputs/shapes .gpu

It holds the text-to-image model (text encoder and VAE in float16, the frozen parts; the UNet in
float32, the editors' starting point; the tokenizer gzipped) and the three generated training
sets as uint8 arrays (``data.npz``): about 34 MB for the run of the results page, so that it
travels with the repository within a 64 MiB transfer.
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from unpack import cast_weights  # beside this script

from instructedit.worlds.recipe import load_selection


def main() -> None:
    run, target = Path(sys.argv[1]), Path(sys.argv[2])
    model = target / "shapes" / "text_to_image" / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(run / "text_to_image" / "model", model)
    for part in ("text_encoder", "vae"):
        cast_weights(model / part, torch.float16)
    tokenizer = model / "tokenizer" / "tokenizer.json"
    tokenizer.with_suffix(".json.gz").write_bytes(gzip.compress(tokenizer.read_bytes(), 9))
    tokenizer.unlink()

    selections = json.loads((run / "pairs" / "selections.json").read_text(encoding="utf-8"))
    seen: dict[tuple[object, ...], int] = {}
    inputs, edited, prompts, keys = [], [], [], {}
    for key in ("filtered", "unfiltered", "fewer"):
        indices = []
        for entry, record in zip(selections[key], load_selection(run, key), strict=True):
            # [folder, seed] or, from a pooled candidate set, [folder, seed, set]
            if tuple(entry) not in seen:
                seen[tuple(entry)] = len(prompts)
                inputs.append(np.asarray(record.input_image.convert("RGB")))
                edited.append(np.asarray(record.edited_image.convert("RGB")))
                prompts.append(record.edit_prompt)
            indices.append(seen[tuple(entry)])
        keys[key] = np.array(indices)
    np.savez_compressed(
        target / "data.npz",
        inputs=np.stack(inputs),
        edited=np.stack(edited),
        prompts=np.array(prompts),
        **keys,
    )
    print({key: len(value) for key, value in keys.items()}, "unique pairs:", len(prompts))


if __name__ == "__main__":
    main()
