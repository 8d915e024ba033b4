"""ShapesWorld's text-to-image model trained on, wider, on a lent GPU; then a run's pairs and editor
from the better one, all within one device call (the eighth run of the ShapesWorld results page).

    python benchmarks/gpu/shapes_t2i.py launch T0      # T0: the call's start, epoch seconds
    python benchmarks/gpu/shapes_t2i.py t2i VARIANT    # one text-to-image variant (launch runs it)
    python benchmarks/gpu/shapes_t2i.py generate I N   # shard I of N of the candidate pairs
    python benchmarks/gpu/shapes_t2i.py editor NAME    # an editor of EDITORS
    python benchmarks/gpu/shapes_t2i.py decoder        # T2I_VAE's decoder fine-tuned
    python benchmarks/gpu/shapes_t2i.py autoencoder    # trains T2I_VAE (before the lease)
    python benchmarks/gpu/shapes_t2i.py carry RUN DEST [--no-candidates]  # (before the lease)

Phases, each ended at its deadline (seconds after T0, from the environment: ``T2I_END``,
``GEN_END``, ``EDITOR_END``); a killed process keeps what it finished, since every stage
checkpoints atomically:

1. text-to-image variants side by side (``T2I_VARIANTS`` of :data:`VARIANTS`, batch
   ``T2I_BATCH``, each with ``T2I_DATA_WORKERS`` processes rendering its scenes ahead), exported
   at their last checkpoint with the (warmed-up) average of their weights; each is read back on
   the 256
   captions of ``examples/shapes/text_to_image_fidelity.py`` at text guidance 3 and 7.5, and the
   one drawing the most captions exactly (guidance 3) becomes the run's model;
2. candidate pairs from it, the recipe's pairs stage split over ``GEN_WORKERS`` processes
   (:func:`~instructedit.worlds.recipe.pair_generation_config` with ``shard``), then the
   recipe's selection (:func:`~instructedit.worlds.recipe.select_training_sets`);
3. the editor (:func:`~instructedit.worlds.recipe.editor_trainer`, batch ``EDITOR_BATCH``),
   exported at its last checkpoint; with ``GT_EDITOR=1`` an editor on the renderer's
   ground-truth pairs trains too, from the end of phase 1.

With ``CONTINUE_FROM`` (a folder written by the ``carry`` command from an unpacked run), phase 1
is skipped: the call starts from that run's text-to-image model and candidate pairs, and phase 2
renders the caption edits they lack (what decides how a candidate is drawn must match, checked;
``CAPTIONS`` may grow); carried ``--no-candidates``, phase 2 is a new pairs stage from the model
(``PAIR_CONTROL_RANGE`` and the rest may change). Phase 3 runs only when ``EDITOR_END`` is after
``GEN_END``. (The carried model's weights travel in
float16, so a continued call draws from them rounded; ``GT_EDITOR=1`` trains its editor anew.)

The run's autoencoder is ``T2I_VAE`` (a saved ``AutoencoderKL``; the shipped editor's by default)
downsampling ``LATENT_DOWNSAMPLING``× (``RecipeConfig.latent_downsampling``), its decoder
fine-tuned ``DECODER_STEPS`` in phase 1 beside the text-to-image model; ``CAPTIONS`` caption
edits × ``SAMPLES`` candidates are asked for (the deadline decides how many are rendered).

The run folder then travels back in ``$OUT/models.tar.*`` and ``$OUT/pairs.tar.*`` (the candidate
pairs), split into 15 MiB parts (weights in float16; no checkpoints, tokenizers or the editor's
copies of the text encoder and autoencoder):
``python benchmarks/gpu/unpack.py`` rebuilds it as a recipe run whose evaluate stage runs next.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "instructedit" / "assets" / "shapes"
RUN = Path(os.environ.get("GPU_RUN", "/tmp/shapes_gpu"))
WORK = Path(os.environ.get("GPU_WORK", "/tmp/shapes_gpu_work"))
OUT = Path(os.environ.get("OUT", "/tmp/out"))
T2I_BATCH = int(os.environ.get("T2I_BATCH", "256"))
EDITOR_BATCH = int(os.environ.get("EDITOR_BATCH", "128"))
GEN_WORKERS = int(os.environ.get("GEN_WORKERS", "12"))
CAPTIONS = int(os.environ.get("CAPTIONS", "3000"))
SAMPLES = int(os.environ.get("SAMPLES", "8"))  # candidates per caption edit, all kept if they pass
DEVICE = os.environ.get("GPU_DEVICE", "cuda")
# The autoencoder of the run (a saved AutoencoderKL folder; the shipped editor's by default) and
# how much it downsamples (RecipeConfig.latent_downsampling, checked against the autoencoder): a
# 2× one is trained on the CPU beforehand (the ``autoencoder`` command) and carried in.
VAE = Path(os.environ.get("T2I_VAE", str(ASSETS / "editor" / "vae")))
DOWNSAMPLING = int(os.environ.get("LATENT_DOWNSAMPLING", "4"))
# Steps fine-tuning that autoencoder's decoder (RecipeConfig.decoder_steps) beside the
# text-to-image training of phase 1, which reads the encoder alone (0: none).
DECODER_STEPS = int(os.environ.get("DECODER_STEPS", "0"))
DECODED = WORK / "decoder" / "vae"  # the autoencoder with its decoder fine-tuned
# The pairs' cross-attention control strength, drawn per candidate from this range
# (RecipeConfig.pair_control_range; "LOW,HIGH"): on the 2x latent, additions need it weaker.
CONTROL_RANGE = tuple(float(v) for v in os.environ.get("PAIR_CONTROL_RANGE", "0.8,0.8").split(","))
# A run to continue (see ``carry``): its text-to-image model and candidates, no phase 1.
CONTINUE_FROM = Path(os.environ["CONTINUE_FROM"]) if os.environ.get("CONTINUE_FROM") else None
# What must match between a continued run's config and this call's: the model's (always) and,
# when candidates were carried, the candidates' (the captions and their seeds follow the seed, the
# rest decides how a candidate is drawn). ``captions`` may grow (the captions are drawn in
# sequence, so more of them extend the list).
MODEL_KEYS = ("size", "latent_downsampling")
CONTINUE_KEYS = (
    "seed",
    "samples_per_pair",
    "keep_per_pair",
    "generation_steps",
    "pair_control",
    "pair_control_range",
    "pair_local_blend",
    "pair_guidance_range",
    "pair_extra_guidance",
)
CARRIED_CANDIDATES = "candidates.tar.gz"

VARIANTS: dict[str, dict[str, Any]] = {
    # The shipped editor's UNet (its noisy-latent input channels) and text encoder, trained on.
    "warm": {"blocks": (64, 128), "warm_unet": True},
    # A wider UNet from scratch, with the shipped text encoder.
    "wide": {"blocks": (96, 192), "warm_unet": False},
    # The shipped size from scratch, with the shipped text encoder (the wide one's control).
    "scratch": {"blocks": (64, 128), "warm_unet": False},
}
# The eighth run trained all three (the from-scratch ones with a constant-decay average, which
# kept their random start); the next lease's question is the two from scratch.
ONLY = [v for v in os.environ.get("T2I_VARIANTS", "").split(",") if v] or ["wide", "scratch"]
if unknown := sorted(set(ONLY) - set(VARIANTS)):
    raise SystemExit(f"T2I_VARIANTS: unknown {unknown}; known: {sorted(VARIANTS)}")


def run_config() -> Any:
    from instructedit.worlds.recipe import RecipeConfig

    config = RecipeConfig(
        output_dir=str(RUN),
        device=DEVICE,
        captions=CAPTIONS,
        samples_per_pair=SAMPLES,
        keep_per_pair=SAMPLES,
        pair_guidance_range=(3.0, 3.0),
        pair_control_range=CONTROL_RANGE,
        editor_batch_size=EDITOR_BATCH,
        latent_downsampling=DOWNSAMPLING,
        ground_truth_large_pairs=int(os.environ.get("GT_PAIRS", "20000")),
        autoencoder_steps=int(os.environ.get("AUTOENCODER_STEPS", "600")),
    )
    if os.environ.get("PERMISSIVE") == "1":  # a dry run on the CPU: keep every candidate
        config = replace(
            config,
            min_image_similarity=-1.0,
            min_direction_similarity=-1.0,
            min_text_similarity=-1.0,
            min_structure_similarity=0.0,
        )
    return config


def t2i_parts(name: str) -> tuple[Any, Any, Any, Any]:
    """(unet, text_encoder, tokenizer, vae) of a variant before training, in float32."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from instructedit.components import vae_scale_factor
    from instructedit.testing import clip_tokenizer
    from instructedit.worlds._models import shapes_unet

    spec = VARIANTS[name]
    if spec["warm_unet"] and DOWNSAMPLING != 4:
        raise SystemExit(f"variant {name!r} starts from the shipped 4x editor's UNet")
    vae = AutoencoderKL.from_pretrained(VAE, torch_dtype=torch.float32)
    factor = vae_scale_factor(vae)
    if factor != DOWNSAMPLING:
        raise SystemExit(f"T2I_VAE downsamples {factor}x but LATENT_DOWNSAMPLING={DOWNSAMPLING}")
    text_encoder = CLIPTextModel.from_pretrained(
        ASSETS / "editor" / "text_encoder", torch_dtype=torch.float32
    )
    side = run_config().size // DOWNSAMPLING
    unet = shapes_unet(0, block_out_channels=spec["blocks"], sample_size=side)
    if spec["warm_unet"]:
        editor = UNet2DConditionModel.from_pretrained(
            ASSETS / "editor" / "unet", torch_dtype=torch.float32
        )
        state = editor.state_dict()
        state["conv_in.weight"] = state["conv_in.weight"][:, :4].clone()
        unet.load_state_dict(state)
    return unet, text_encoder, clip_tokenizer(), vae


def t2i(name: str) -> None:
    import torch
    from diffusers import DDPMScheduler

    from instructedit.testing import SD_SCHEDULER_CONFIG
    from instructedit.worlds._models import train_text_to_image

    torch.set_num_threads(2)
    unet, text_encoder, tokenizer, vae = t2i_parts(name)
    print(f"[{name}] {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M", flush=True)
    train_text_to_image(
        unet,
        text_encoder,
        tokenizer,
        vae,
        DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        steps=10**7,
        batch_size=T2I_BATCH,
        ema_decay=0.999,
        progress=False,
        checkpoint=WORK / name / "t2i.pt",
        checkpoint_every=int(os.environ.get("T2I_CHECKPOINT_EVERY", "100")),
        data_workers=int(os.environ.get("T2I_DATA_WORKERS", "3")),
        device=DEVICE,
    )


def autoencoder() -> None:
    """Trains a ``LATENT_DOWNSAMPLING``× autoencoder as the recipe does (``autoencoder_steps``,
    resumable) and saves it to ``T2I_VAE``: run it on the CPU before the lease (600 steps of the
    2× one took 941 s of two cores)."""
    from instructedit.data import write_json_atomic
    from instructedit.worlds._models import shapes_autoencoder, train_autoencoder

    if "T2I_VAE" not in os.environ or ASSETS in (VAE.resolve(), *VAE.resolve().parents):
        raise SystemExit("autoencoder: set T2I_VAE to a new folder (not the shipped model's)")
    config = run_config()
    vae = shapes_autoencoder(config.seed, DOWNSAMPLING)
    losses = train_autoencoder(
        vae,
        steps=config.autoencoder_steps,
        size=config.size,
        seed=config.seed,
        checkpoint=WORK / f"autoencoder-{DOWNSAMPLING}x.pt",
        device=DEVICE,
    )
    vae.to("cpu").save_pretrained(VAE, safe_serialization=True)
    write_json_atomic(VAE / "losses.json", losses)
    last = losses[-50:]
    print(f"[autoencoder] {len(losses)} steps, last 50: {sum(last) / max(1, len(last)):.4f}")


def decoder() -> None:
    """Fine-tunes ``VAE``'s decoder (its encoder, and so the latents, stay as they are)."""
    import torch
    from diffusers import AutoencoderKL

    from instructedit.data import write_json_atomic
    from instructedit.worlds._models import finetune_decoder

    torch.set_num_threads(2)
    vae = AutoencoderKL.from_pretrained(VAE, torch_dtype=torch.float32)
    losses = finetune_decoder(
        vae,
        steps=DECODER_STEPS,
        progress=False,
        checkpoint=WORK / "decoder" / "decoder.pt",
        device=DEVICE,
    )
    vae.to("cpu").save_pretrained(DECODED, safe_serialization=True)
    write_json_atomic(WORK / "decoder" / "losses.json", losses)
    print(f"[decoder] {len(losses)} steps, last loss {losses[-1]:.4f}", flush=True)


def t2i_pipeline(name: str) -> tuple[Any, dict[str, Any]]:
    """A variant's averaged weights at its last checkpoint, as a pipeline on ``DEVICE``."""
    import torch

    from instructedit.worlds._models import _latent_scale
    from instructedit.worlds.recipe import text_to_image_pipeline

    state = torch.load(WORK / name / "t2i.pt", map_location="cpu", weights_only=True)
    unet, text_encoder, tokenizer, vae = t2i_parts(name)
    unet.load_state_dict(state["modules"]["ema_unet"])
    text_encoder.load_state_dict(state["modules"]["ema_text_encoder"])
    if DECODER_STEPS and (WORK / "decoder" / "losses.json").is_file():  # written last
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(DECODED, torch_dtype=torch.float32)
    vae.register_to_config(scaling_factor=_latent_scale(vae, run_config().size, 0))
    pipe = text_to_image_pipeline(unet.eval(), text_encoder, tokenizer, vae).to(DEVICE)
    last = state["losses"][-200:]
    return pipe, {
        "steps": state["step"],
        "batch": T2I_BATCH,
        "examples": state["step"] * T2I_BATCH,
        "loss_last_200": round(sum(last) / max(1, len(last)), 5),
        "parameters_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2),
    }


def fidelity_module() -> Any:
    import importlib.util

    path = ROOT / "examples" / "shapes" / "text_to_image_fidelity.py"
    spec = importlib.util.spec_from_file_location("text_to_image_fidelity", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(shard: int, count: int) -> None:
    import torch

    from instructedit.clip import ClipDirectionalFilter
    from instructedit.datagen import generate_dataset
    from instructedit.p2p import PromptToPrompt
    from instructedit.worlds.recipe import clip_scorer, pair_captions, pair_generation_config
    from instructedit.worlds.shapes import ShapesCaptionEditor

    torch.set_num_threads(1)
    config = run_config()
    p2p = PromptToPrompt.from_pretrained(RUN / "text_to_image" / "model").to(DEVICE)
    generate_dataset(
        pair_captions(config),
        RUN / "pairs" / "candidates",
        caption_editor=ShapesCaptionEditor(seed=config.seed),
        p2p=p2p,
        clip_filter=ClipDirectionalFilter(clip_scorer(config), -1.0, -1.0, -1.0),
        config=pair_generation_config(config, config.pair_guidance_range, shard=(shard, count)),
        progress=False,
    )


# Editors the call can train: the run's, on its filtered pairs, and (``GT_EDITOR=1``) one on the
# renderer's ground-truth pairs (the ``ground_truth_large`` ablation's training set, in a folder of
# its own: the recipe's ablations stage does not know it), which starts as soon as the
# text-to-image model is chosen and trains beside the pairs stage: how far the latent lets an
# editor keep the unchanged region when its pairs are exact. On the CPU after unpack.py:
# ``evaluate_editor(run / "ground_truth_editor" / "model", config)``.
EDITORS = {"editor": Path("editor"), "ground_truth": Path("ground_truth_editor")}


def editor_records(name: str, config: Any, limit: int | None = None) -> list[Any]:
    """An editor's training set (its first ``limit`` pairs: enough to export at a checkpoint)."""
    from instructedit.worlds.recipe import ground_truth_records, load_selection

    if name == "editor":
        return load_selection(RUN, "filtered")[:limit]
    count = config.ground_truth_large_pairs
    return ground_truth_records(min(count, limit or count), config, stream="ground-truth-large")


def editor(name: str) -> None:
    import torch

    from instructedit.worlds.recipe import editor_trainer

    torch.set_num_threads(4 if name == "editor" else 2)
    config = run_config()
    records = editor_records(name, config)
    print(f"[{name}] {len(records)} pairs, batch {config.editor_batch_size}", flush=True)
    trainer = editor_trainer(config, RUN, records, RUN / EDITORS[name], 10**7)
    every = int(os.environ.get("EDITOR_CHECKPOINT_EVERY", "250"))
    trainer.config = replace(trainer.config, checkpoint_every=every, log_every=100)
    trainer.train(progress=False)


def editor_checkpoints(name: str) -> list[int]:
    folder = RUN / EDITORS[name] / "run" / "checkpoints"
    return sorted(
        int(p.name[5:]) for p in folder.glob("step-*") if (p / "trainer_state.json").is_file()
    )


def export_editor(name: str, config: Any, seconds: float) -> dict[str, Any]:
    """Exports an editor at its last checkpoint (marking the recipe stage done for the run's).
    No step runs: the trainer gets one batch of its pairs and no latent cache, so the export
    takes seconds, not a re-render and re-encode of the training set."""
    from instructedit.data import write_json_atomic
    from instructedit.worlds.recipe import editor_trainer, selection_folders

    steps = editor_checkpoints(name)
    if not steps:
        return {"error": "no checkpoint"}
    try:  # whatever happens, the run still travels back (finish packs it)
        folder = RUN / EDITORS[name]
        at = replace(config, editor_steps=steps[-1], editor_cache_latents=False)
        records = editor_records(name, config, limit=config.editor_batch_size)
        trainer = editor_trainer(at, RUN, records, folder, steps[-1])
        trainer.train(progress=False)
        trainer.export(folder / "model")
        examples = (
            len(selection_folders(RUN, "filtered"))
            if name == "editor"
            else config.ground_truth_large_pairs
        )
        # The losses are the training log's.
        metrics = folder / "run" / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        losses = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
        record: dict[str, Any] = {
            "loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
            "examples": examples,
            "steps": steps[-1],
            "logged_losses": losses[::5],
        }
        if name == "editor":
            done("editor", record, seconds)
            (RUN / "config.json").write_text(json.dumps(asdict(at), indent=2))
        else:
            write_json_atomic(folder / "GPU.json", {**record, "seconds": round(seconds, 1)})
        return {"seconds": round(seconds), **record}
    except Exception as error:
        return {"error": repr(error), "checkpoints": steps}


@contextlib.contextmanager
def processes(commands: dict[str, list[str]], deadline: float) -> Any:
    """Runs ``commands`` (name → argv after this script) until they end or ``deadline``."""
    WORK.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as logs:
        procs = {
            name: subprocess.Popen(
                [sys.executable, __file__, *argv],
                stdout=logs.enter_context(open(WORK / f"{name}.log", "w")),
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: see kill()
            )
            for name, argv in commands.items()
        }
        while time.time() < deadline and any(p.poll() is None for p in procs.values()):
            time.sleep(1)
        for p in procs.values():
            kill(p)
        yield {name: p.returncode for name, p in procs.items()}
    for name in commands:
        print(f"---- {name} (last lines)\n" + tail(WORK / f"{name}.log"), flush=True)


def kill(process: subprocess.Popen[bytes]) -> None:
    """Ends a stage process and everything it started (its data workers would otherwise live on,
    orphaned, to the end of the call), then waits for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def caption_folders(candidates: Path) -> list[Path]:
    """The caption folders of a candidate set (in order; none when it does not exist yet)."""
    if not candidates.is_dir():
        return []
    return sorted(p for p in candidates.iterdir() if p.is_dir() and p.name.isdigit())


def tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-6:])


def done(stage: str, record: dict[str, Any], seconds: float) -> None:
    """Marks a recipe stage done, with its record and time, as ``reproduce`` does."""
    from instructedit.data import write_json_atomic

    (RUN / stage).mkdir(parents=True, exist_ok=True)
    write_json_atomic(RUN / stage / "DONE.json", {**record, "seconds": round(seconds, 1)})


def launch(t0: float) -> None:
    import torch

    ends = {key: t0 + float(os.environ[key]) for key in ("T2I_END", "GEN_END", "EDITOR_END")}
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    }
    config = run_config()
    WORK.mkdir(parents=True, exist_ok=True)
    if CONTINUE_FROM is not None:
        continue_run(config)
        summary["continued_from"] = json.loads((RUN / "text_to_image" / "DONE.json").read_text())
        summary["carried_caption_folders"] = len(caption_folders(RUN / "pairs" / "candidates"))
        print(f"continuing {CONTINUE_FROM} at +{time.time() - t0:.0f} s", flush=True)
    else:
        RUN.mkdir(parents=True, exist_ok=True)
        (RUN / "config.json").write_text(json.dumps(asdict(config), indent=2))
        text_to_image_phase(summary, ends["T2I_END"], t0)
    shutil.copytree(ASSETS / "clip", RUN / "clip" / "model", dirs_exist_ok=True)
    done("clip", {"model": "the shipped editor's CLIP (src/instructedit/assets/shapes/clip)"}, 0)
    ground_truth, ground_truth_start = None, time.time()
    if os.environ.get("GT_EDITOR") == "1":
        ground_truth = subprocess.Popen(
            [sys.executable, __file__, "editor", "ground_truth"],
            stdout=open(WORK / "ground_truth.log", "w"),  # noqa: SIM115 (killed at EDITOR_END)
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see kill()
        )
    editor_start = time.time()
    try:
        editor_start = pairs_and_editor(config, summary, ends, t0)
    except Exception as error:  # keep what finished: the models, the ground-truth editor
        summary["error"] = repr(error)
        print(f"stopped: {error!r}", flush=True)
    finally:
        try:
            if ground_truth is not None:  # to EDITOR_END, also when the pairs stage failed
                while time.time() < ends["EDITOR_END"] and ground_truth.poll() is None:
                    time.sleep(1)
                kill(ground_truth)
                print("---- ground_truth (last lines)\n" + tail(WORK / "ground_truth.log"))
            if editor_checkpoints("editor"):
                summary["editor"] = export_editor("editor", config, time.time() - editor_start)
            if ground_truth is not None:
                summary["ground_truth_editor"] = {
                    "returncode": ground_truth.returncode,
                    **export_editor("ground_truth", config, time.time() - ground_truth_start),
                }
        finally:
            finish(summary)


def text_to_image_phase(summary: dict[str, Any], end: float, t0: float) -> None:
    """Phase 1: the variants trained until ``end``, read back; the best becomes the run's model."""
    start = time.time()
    commands = {n: ["t2i", n] for n in ONLY}
    if DECODER_STEPS:
        commands["decoder"] = ["decoder"]
    with processes(commands, end) as codes:
        print("text-to-image exit codes", codes, flush=True)
    summary["t2i_seconds"] = round(time.time() - start)
    if DECODER_STEPS:
        losses = WORK / "decoder" / "losses.json"
        decoder_losses = json.loads(losses.read_text())[-50:] if losses.is_file() else []
        summary["decoder"] = (
            {
                "steps": DECODER_STEPS,
                "loss_last_50": sum(decoder_losses) / max(1, len(decoder_losses)),
            }
            if decoder_losses
            else {"error": "not finished: the run keeps the autoencoder's own decoder"}
        )
    fidelity = fidelity_module()
    captions = fidelity.eval_captions(int(os.environ.get("FIDELITY_CAPTIONS", "256")))
    variants: dict[str, Any] = {}
    best = None
    for name in ONLY:
        if not (WORK / name / "t2i.pt").is_file():
            variants[name] = {"error": "no checkpoint"}
            continue
        pipe, record = t2i_pipeline(name)
        for guidance in (3.0, 7.5):
            scores = fidelity.fidelity(pipe, captions, guidance=guidance)
            record[f"fidelity_g{guidance:g}"] = {
                k: {m: round(float(v), 4) for m, v in group.items()} for k, group in scores.items()
            }
        variants[name] = record
        exact = record["fidelity_g3"]["all"]["exact"]
        print(f"[{name}] {record}", flush=True)
        if best is None or exact > best[1]:
            best = (name, exact, pipe)
    summary["variants"] = variants
    if best is None:
        raise SystemExit("no text-to-image variant finished a checkpoint")
    name, _, pipe = best
    pipe.to("cpu").save_pretrained(RUN / "text_to_image" / "model", safe_serialization=True)
    done("text_to_image", {"variant": name, **variants[name]}, summary["t2i_seconds"])
    print(f"chose {name} at +{time.time() - t0:.0f} s", flush=True)


def continue_run(config: Any) -> None:
    """Starts ``RUN`` from ``CONTINUE_FROM`` (written by ``carry``): its text-to-image model back in
    float32 (its tokenizer rebuilt) and its candidates, when carried, kept, so the pairs stage
    renders only the caption edits they lack."""
    import torch
    from unpack import cast_weights  # beside this script

    from instructedit.testing import clip_tokenizer

    assert CONTINUE_FROM is not None
    source, target = CONTINUE_FROM.resolve(), RUN.resolve()
    if source == target or target in source.parents or source in target.parents:
        raise SystemExit(f"CONTINUE_FROM ({source}) and GPU_RUN ({target}) must not overlap")
    carried = json.loads((CONTINUE_FROM / "config.json").read_text())
    wanted = json.loads(json.dumps(asdict(config)))  # tuples as JSON lists, as carried
    candidates = (CONTINUE_FROM / "pairs" / CARRIED_CANDIDATES).is_file()
    keys = [*MODEL_KEYS, *(CONTINUE_KEYS if candidates else ())]
    differ = [k for k in keys if carried.get(k) != wanted[k]]
    if differ or (candidates and wanted["captions"] < carried["captions"]):
        keys = [*differ, "captions"]
        raise SystemExit(
            f"CONTINUE_FROM: {', '.join(f'{k}={carried.get(k)!r}' for k in keys)}; this call: "
            f"{', '.join(f'{k}={wanted[k]!r}' for k in keys)} (only captions may differ, upward; "
            "carried without candidates, only the model's size and latent must match)"
        )
    # Raised before the try of launch(): nothing was computed, so nothing is packed.
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.copytree(CONTINUE_FROM, RUN)
    cast_weights(RUN / "text_to_image", torch.float32)
    clip_tokenizer().save_pretrained(RUN / "text_to_image" / "model" / "tokenizer")
    if (archive := RUN / "pairs" / CARRIED_CANDIDATES).is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(RUN / "pairs", filter="data")
        archive.unlink()
    (RUN / "config.json").write_text(json.dumps(wanted, indent=2))


def carry(run: Path, dest: Path, candidates: bool = True) -> None:
    """Writes ``dest`` for ``CONTINUE_FROM`` from an unpacked run (``unpack.py``): its config, its
    finished text-to-image stage (weights in float16, to travel; no tokenizer) and, unless
    ``candidates`` is false (``--no-candidates``: a new pairs stage, with other settings, from the
    run's model), its candidate pairs (a gzipped tar); not its selections, which the continued
    pairs stage makes anew."""
    import torch
    from unpack import cast_weights  # beside this script

    if not (run / "text_to_image" / "DONE.json").is_file():
        raise SystemExit(f"carry: {run} has no finished text_to_image stage")
    if dest.exists():
        raise SystemExit(f"carry: {dest} exists")
    # The tokenizer (3.5 MiB) is rebuilt on arrival, from open_clip's BPE file.
    shutil.copytree(
        run / "text_to_image", dest / "text_to_image", ignore=shutil.ignore_patterns("tokenizer")
    )
    cast_weights(dest / "text_to_image", torch.float16)
    if candidates and (run / "pairs" / "candidates").is_dir():  # gzipped: JPEG headers repeat
        (dest / "pairs").mkdir(parents=True)
        with tarfile.open(dest / "pairs" / CARRIED_CANDIDATES, "w:gz") as tar:
            tar.add(run / "pairs" / "candidates", arcname="candidates")
    shutil.copy2(run / "config.json", dest / "config.json")
    size = sum(path.stat().st_size for path in dest.rglob("*") if path.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB")


def pairs_and_editor(
    config: Any, summary: dict[str, Any], ends: dict[str, float], t0: float
) -> float:
    """Phases 2 and 3 (the editor's training, not its export); returns when phase 3 started."""
    from instructedit.data import write_seeds_index
    from instructedit.worlds.recipe import clip_scorer, select_training_sets

    # 2. Candidate pairs, then the recipe's selection.
    start = time.time()
    candidates = RUN / "pairs" / "candidates"
    candidates.mkdir(parents=True, exist_ok=True)
    commands = {f"gen{i}": ["generate", str(i), str(GEN_WORKERS)] for i in range(GEN_WORKERS)}
    with processes(commands, ends["GEN_END"]) as codes:
        print("generation exit codes", codes, flush=True)
    write_seeds_index(candidates)
    folders = caption_folders(candidates)
    summary["generation"] = {"seconds": round(time.time() - start), "caption_folders": len(folders)}
    start = time.time()
    record = select_training_sets(config, RUN / "pairs", clip_scorer(config), read_back=False)
    count = sum(len(list(p.glob("*_0.jpg"))) for p in folders)
    record = {"candidates": count, "caption_folders": len(folders), **record}
    if "carried_caption_folders" in summary:  # a continued run: the seconds are this call's
        record["carried_caption_folders"] = summary["carried_caption_folders"]
    done("pairs", record, summary["generation"]["seconds"] + time.time() - start)
    summary["pairs"] = {"seconds": round(time.time() - start), **record}
    print(f"pairs {summary['pairs']} at +{time.time() - t0:.0f} s", flush=True)

    # 3. The editor (beside the ground-truth one, started after the text-to-image stage).
    start = time.time()
    if ends["EDITOR_END"] <= ends["GEN_END"]:
        print("no editor: EDITOR_END is not after GEN_END", flush=True)
        return start
    with processes({"editor": ["editor", "editor"]}, ends["EDITOR_END"]) as codes:
        print("editor exit codes", codes, flush=True)
    return start


def finish(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=1), flush=True)
    (RUN / "gpu_summary.json").write_text(json.dumps(summary, indent=1))
    pack()


def pack() -> None:
    """The run folder in float16, without what can be rebuilt: ``$OUT/models.tar.*`` (all but the
    candidate pairs) and ``$OUT/pairs.tar.*``."""
    import torch
    from unpack import cast_weights  # beside this script

    staging = WORK / "pack" / RUN.name
    shutil.rmtree(staging.parent, ignore_errors=True)
    skip = shutil.ignore_patterns("checkpoints", "run", "tokenizer", "*.pt")
    shutil.copytree(RUN, staging, ignore=skip)
    for folder in EDITORS.values():
        for duplicate in ("text_encoder", "vae", "tokenizer"):
            shutil.rmtree(staging / folder / "model" / duplicate, ignore_errors=True)
    cast_weights(staging, torch.float16)
    OUT.mkdir(parents=True, exist_ok=True)
    candidates = staging / "pairs" / "candidates"
    written = write_parts("models", [p for p in staging.rglob("*") if candidates not in p.parents])
    # What travels back is at most 64 MiB: the candidate pairs fill what the models leave, caption
    # folders in order (a prefix of each generation shard's work).
    budget = 62 * 2**20 - written - 2**20
    members: list[Path] = []
    if candidates.is_dir():
        # Index files first, then the training set's caption folders, then the rest (what the
        # budget cuts is the unselected candidates); no hidden staging folders of killed shards.
        index = staging / "pairs" / "selections.json"
        selections = json.loads(index.read_text()) if index.is_file() else {}
        chosen = {entry[0] for entry in selections.get("filtered", [])}
        folders = caption_folders(candidates)
        others = [p for p in candidates.iterdir() if not p.name.isdigit()]
        for path in sorted(p for p in others if not p.name.startswith(".")):
            members += [path, *sorted(path.rglob("*"))]
        for path in [p for p in folders if p.name in chosen] + [
            p for p in folders if p.name not in chosen
        ]:
            members += [path, *sorted(path.rglob("*"))]
    write_parts("pairs", members, budget)


def write_parts(label: str, paths: list[Path], budget: float = float("inf")) -> int:
    """``paths`` (files and folders under ``WORK / "pack"``, stored relative to it) as a gzipped
    tar split into 15 MiB parts ``$OUT/{label}.tar.{i}``, stopping at a caption folder once past
    ``budget`` bytes; returns the bytes written."""
    base = WORK / "pack"
    buffer = io.BytesIO()
    kept = 0
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in paths:
            if path.parent.name == "candidates" and buffer.tell() > budget:
                break
            tar.add(path, arcname=str(path.relative_to(base)), recursive=False)
            kept += 1
    data = buffer.getvalue()
    part = 15 * 2**20
    for index in range(0, len(data), part):
        (OUT / f"{label}.tar.{index // part}").write_bytes(data[index : index + part])
    print(f"packed {label}: {kept} of {len(paths)} paths, {len(data) / 2**20:.1f} MiB", flush=True)
    return len(data)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "launch":
        launch(float(sys.argv[2]))
    elif command == "t2i":
        t2i(sys.argv[2])
    elif command == "generate":
        generate(int(sys.argv[2]), int(sys.argv[3]))
    elif command == "editor":
        editor(sys.argv[2])
    elif command == "autoencoder":
        autoencoder()
    elif command == "carry":
        carry(Path(sys.argv[2]), Path(sys.argv[3]), candidates="--no-candidates" not in sys.argv)
    elif command == "decoder":
        decoder()
    elif command == "pack":
        pack()
    else:
        raise SystemExit(f"unknown command {command!r}")
