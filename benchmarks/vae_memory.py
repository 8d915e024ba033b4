"""Peak memory of an SD-1.5-shaped VAE encoding and decoding, with and without tiling and slicing.

Each setting runs in its own fresh interpreter: it builds ``AutoencoderKL`` with SD 1.5's VAE
config (random weights, fp32), records the peak resident set size (``ru_maxrss``) after building
the model and a random image, then encodes the image (``latent_dist.mode()``) and decodes the
latents under inference mode, and reports the new peak and the wall time.

    python benchmarks/vae_memory.py [--size 1024] [--settings plain tiling] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# name: (batch size, VAE option)
SETTINGS: dict[str, tuple[int, str | None]] = {
    "plain": (1, None),
    "tiling": (1, "tiling"),
    "plain-batch2": (2, None),
    "slicing-batch2": (2, "slicing"),
}

SD15_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def _max_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(setting: str, size: int, threads: int | None) -> None:
    """Measure one setting in this (fresh) process and print one JSON line."""
    import torch
    from diffusers import AutoencoderKL

    if threads is not None:
        torch.set_num_threads(threads)
    batch, option = SETTINGS[setting]
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE_CONFIG).to(torch.float32).eval()
    if option == "tiling":
        vae.enable_tiling()
    elif option == "slicing":
        vae.enable_slicing()
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    baseline = _max_rss_mib()
    start = time.perf_counter()
    with torch.inference_mode():
        latents = vae.encode(image).latent_dist.mode()
        decoded = vae.decode(latents).sample
    seconds = time.perf_counter() - start
    peak = _max_rss_mib()
    result = {
        "setting": setting,
        "batch": batch,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "increase_mib": peak - baseline,
        "seconds": seconds,
        "finite": bool(torch.isfinite(decoded).all()),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


def _run_child(setting: str, size: int, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", setting, "--size", str(size)]
    if threads is not None:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=None, help="default: torch's default")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.size, args.threads)
        return

    results: dict[str, dict] = {}
    for setting in args.settings:
        results[setting] = _run_child(setting, args.size, args.threads)
        if not results[setting]["finite"]:
            print(f"warning: {setting} decoded non-finite values", file=sys.stderr)
    threads = next(iter(results.values()))["threads"]
    print(
        f"SD 1.5 VAE (random weights, fp32), {args.size}² image, encode + decode, "
        f"{threads} threads, one fresh process per setting"
    )
    print()
    print("| setting | batch | peak RSS (MiB) | increase over model baseline (MiB) | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for setting, r in results.items():
        print(
            f"| {setting} | {r['batch']} | {r['peak_mib']:.0f} | {r['increase_mib']:.0f} "
            f"| {r['seconds']:.1f} |"
        )
    print()
    for option, plain in (("tiling", "plain"), ("slicing-batch2", "plain-batch2")):
        if option in results and plain in results:
            ratio = results[option]["increase_mib"] / results[plain]["increase_mib"]
            print(f"increase ratio {option} / {plain}: {ratio:.3f}")


if __name__ == "__main__":
    main()
