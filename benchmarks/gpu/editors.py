"""ShapesWorld's editor and ablation editors on a lent GPU, side by side, until a deadline.

This trained the second run's editor, shipped then (see the ShapesWorld results page). Each
variant runs the recipe's own :func:`~instructedit.worlds.recipe.editor_trainer` in its own
process (an editor step is bound by the CPU side, so six share one card well), checkpointing every
``GPU_CHECKPOINT_EVERY`` steps. At the deadline all are stopped and each is exported at the last
step every variant checkpointed: the EMA UNet as float16 safetensors in ``$OUT``, with
``train.json``. The learning rate is constant, so stopping at step S is the run with
``max_steps = S``; a second launch resumes each variant exactly.

    python benchmarks/gpu/editors.py launch DEADLINE   # DEADLINE: epoch seconds
    python benchmarks/gpu/editors.py worker NAME       # one variant (launch starts these)

``SHAPES_GPU_DATA`` names the folder :mod:`pack` wrote (default ``.gpu``).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(os.environ.get("SHAPES_GPU_DATA", ".gpu")).resolve()
ROOT = HERE / "shapes"  # ROOT / "text_to_image" / "model"
RUNS = Path(os.environ.get("GPU_RUNS", "/tmp/gpu_runs"))
OUT = Path(os.environ.get("OUT", "/tmp/out"))
BATCH = int(os.environ.get("GPU_BATCH", "128"))
LR = float(os.environ.get("GPU_LR", "3e-4"))
WORKERS = int(os.environ.get("GPU_LOADER_WORKERS", "1"))
CHECKPOINT_EVERY = int(os.environ.get("GPU_CHECKPOINT_EVERY", "250"))

VARIANTS = {
    "full": ("filtered", "copy"),
    "zero_init": ("filtered", "zeros"),
    "no_clip_filter": ("unfiltered", "copy"),
    "fewer_pairs": ("fewer", "copy"),
    "ground_truth": ("ground_truth", "copy"),
    "ground_truth_large": ("ground_truth_large", "copy"),
}
ONLY = [v for v in os.environ.get("GPU_VARIANTS", "").split(",") if v] or list(VARIANTS)


def config(init):
    from instructedit.worlds.recipe import RecipeConfig

    return RecipeConfig(
        output_dir=str(ROOT),
        device=None,
        editor_batch_size=BATCH,
        editor_learning_rate=LR,
        editor_init=init,
        loader_workers=WORKERS,
    )


def records(data, cfg):
    from PIL import Image

    from instructedit.data import EditRecord
    from instructedit.worlds.recipe import ground_truth_records

    packed = np.load(HERE / "data.npz")
    if data == "ground_truth":
        return ground_truth_records(len(packed["filtered"]), cfg)
    if data == "ground_truth_large":
        return ground_truth_records(cfg.ground_truth_large_pairs, cfg, stream="ground-truth-large")
    inputs, edited, prompts = packed["inputs"], packed["edited"], packed["prompts"]
    return [
        EditRecord(Image.fromarray(inputs[i]), str(prompts[i]), Image.fromarray(edited[i]))
        for i in packed[data]
    ]


def worker(name):
    from dataclasses import replace

    data, init = VARIANTS[name]
    cfg = config(init)
    examples = records(data, cfg)
    print(f"[{name}] {len(examples)} examples, init {init}, batch {BATCH}, lr {LR}", flush=True)
    from instructedit.worlds.recipe import editor_trainer

    trainer = editor_trainer(cfg, ROOT, examples, RUNS / name, 10**6)
    trainer.config = replace(
        trainer.config, checkpoint_every=CHECKPOINT_EVERY, log_every=100, checkpoints_to_keep=None
    )
    trainer.train()


def checkpoints(name):
    folder = RUNS / name / "run" / "checkpoints"
    return sorted(p for p in folder.glob("step-*") if (p / "trainer_state.json").is_file())


def export(name, at=None):
    """EMA weights of the latest complete checkpoint (at or before step ``at``) →
    $OUT/NAME.safetensors (float16)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    folder = RUNS / name / "run"
    done = [p for p in checkpoints(name) if at is None or int(p.name[5:]) <= at]
    if not done:
        return {"steps": 0}
    latest = done[-1]
    step = json.loads((latest / "trainer_state.json").read_text())["step"]
    t2i = json.loads((ROOT / "text_to_image" / "model" / "unet" / "config.json").read_text())
    unet = UNet2DConditionModel.from_config({**t2i, "in_channels": 8})
    shadow = torch.load(latest / "ema.pt", weights_only=True, map_location="cpu")["shadow_params"]
    names = [n for n, _ in unet.named_parameters()]
    assert len(names) == len(shadow), (len(names), len(shadow))
    state = {
        n: t.detach().to(torch.float16).contiguous() for n, t in zip(names, shadow, strict=True)
    }
    assert set(state) == set(unet.state_dict()), "UNet has buffers"
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(state, str(OUT / f"{name}.safetensors"), metadata={"step": str(step)})
    path = folder / "metrics.jsonl"
    metrics = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    tail = [m for m in metrics if step - 1000 < m["step"] <= step] or [
        {"images_per_s": 0, "loss": 0}
    ]
    return {
        "steps": step,
        "examples_seen": step * BATCH,
        "images_per_s": round(float(np.median([m["images_per_s"] for m in tail])), 1),
        "loss_last_1000": round(float(np.mean([m["loss"] for m in tail])), 5),
        "batch": BATCH,
        "lr": LR,
        "init": VARIANTS[name][1],
        "data": VARIANTS[name][0],
    }


def launch(deadline):
    RUNS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as logs:
        procs = {
            name: subprocess.Popen(
                [sys.executable, __file__, "worker", name],
                stdout=logs.enter_context(open(RUNS / f"{name}.log", "w")),
                stderr=subprocess.STDOUT,
            )
            for name in ONLY
        }
        while time.time() < deadline and any(p.poll() is None for p in procs.values()):
            time.sleep(2)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)  # checkpoints are written atomically
        for p in procs.values():
            p.wait()
    latest = {n: int(c[-1].name[5:]) if (c := checkpoints(n)) else 0 for n in ONLY}
    common = min([v for v in latest.values() if v > 0] or [0])
    print("latest checkpoints", latest, "common step", common, flush=True)
    results = {}
    for name in ONLY:
        try:
            results[name] = export(name, common)
            results[name]["latest_checkpoint"] = latest[name]
        except Exception as error:  # report, keep the others
            results[name] = {"error": repr(error)}
        lines = (RUNS / f"{name}.log").read_text(errors="replace").replace("\r", "\n").splitlines()
        bars = [line for line in lines if line.startswith("training:")]
        tail = "\n".join(
            [line for line in lines if not line.startswith("training:")][-15:] + bars[-1:]
        )
        print(f"==== {name}: {results[name]}\n{tail}\n", flush=True)
    (OUT / "train.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "launch":
        launch(float(sys.argv[2]))
    elif sys.argv[1] == "worker":
        worker(sys.argv[2])
    else:
        print(json.dumps(export(sys.argv[2])))
