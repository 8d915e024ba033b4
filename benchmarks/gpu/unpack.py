"""Rebuilds the run folder that ``shapes_t2i.py`` packed on a GPU machine, as a recipe run.

    python benchmarks/gpu/unpack.py FILES_DIR TARGET

``FILES_DIR`` holds ``models.tar.*`` (and ``pairs.tar.*``, the candidate pairs); the run lands in
``TARGET`` (its folder name is the GPU run's). Weights go back to float32, the tokenizers are
rebuilt from open_clip's BPE file and the editor (and the ground-truth editor of ``GT_EDITOR=1``)
gets the text-to-image model's text encoder and autoencoder (both frozen while it trained). Where
the packer's budget left candidate folders behind, ``seeds.json`` is rewritten from the folders
that came and the training sets lose the entries they cannot load (both counted). The recipe then
runs the evaluate stage: ``reproduce(config, until="evaluate")`` with the run's ``config.json``
(``output_dir`` and ``device`` changed); the ablations need the editor's snapshot at
``ablation_steps``, which the GPU call does not export. The ground-truth editor is evaluated alone:
``evaluate_editor(run / "ground_truth_editor" / "model", config)``.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from instructedit.data import folder_index, write_json_atomic, write_seeds_index
from instructedit.testing import clip_tokenizer


def cast_weights(folder: Path, dtype: torch.dtype) -> None:
    """Rewrites every safetensors file under ``folder`` with its floating-point tensors in
    ``dtype`` (float16 to travel, float32 to train and evaluate)."""
    for path in folder.rglob("*.safetensors"):
        state = load_file(str(path))
        save_file(
            {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
            str(path),
            metadata={"format": "pt"},
        )


def main() -> None:
    files, target = Path(sys.argv[1]), Path(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    for label in ("models", "pairs"):
        parts = sorted(files.glob(f"{label}.tar.*"), key=lambda p: int(p.suffix[1:]))
        if not parts:
            print(f"no {label}.tar.* in {files}")
            continue
        data = b"".join(part.read_bytes() for part in parts)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(target, filter="data")
    runs = [p for p in target.iterdir() if (p / "config.json").is_file()]
    if len(runs) != 1:
        raise SystemExit(f"expected one run folder in {target}, found {runs}")
    run = runs[0]
    cast_weights(run, torch.float32)
    candidates = run / "pairs" / "candidates"
    if candidates.is_dir():
        write_seeds_index(candidates)
        present = {name for name, _ in folder_index(candidates)}
        path = run / "pairs" / "selections.json"
        # None when the call's selection failed: the candidates and models still come.
        selections = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        kept = {key: [e for e in entries if e[0] in present] for key, entries in selections.items()}
        for key, entries in selections.items():
            if len(kept[key]) < len(entries):
                print(
                    f"{key}: {len(entries) - len(kept[key])} of {len(entries)} pairs did not travel"
                )
        if selections:
            write_json_atomic(path, kept)
    tokenizer = clip_tokenizer()
    t2i = run / "text_to_image" / "model"
    editors = [run / "editor" / "model", run / "ground_truth_editor" / "model"]
    for model in (t2i, *editors):
        if model.is_dir():
            tokenizer.save_pretrained(model / "tokenizer")
    for editor in editors:
        if editor.is_dir():
            for part in ("text_encoder", "vae"):
                shutil.copytree(t2i / part, editor / part, dirs_exist_ok=True)
    print(run)


if __name__ == "__main__":
    main()
