"""``instructedit train`` as one job of two processes, run again and again, and killed.

    python benchmarks/distributed_train.py                 # torchrun and accelerate launch, 10 each
    python benchmarks/distributed_train.py --runs 3 --launchers torchrun

Builds a tiny Stable Diffusion folder and a folder dataset in the official layout, writes a
``run.toml`` of ``--steps`` steps, then for each launcher:

1. runs ``<launcher> -m instructedit train --config run.toml`` with two processes ``--runs``
   times, each into a fresh folder, and checks every run: exit 0, each step logged once in
   ``metrics.jsonl``, the export written, no staging folder left;
2. runs it once more, SIGKILLs the whole job (launcher and both processes) as soon as its first
   checkpoint appears, starts the same command again, and compares the resumed job's losses and
   exported UNet with the first uninterrupted run's.

Prints one line per run and a summary; exits 1 if any check fails. It needs no GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from instructedit.data import FolderSample, write_caption_folder, write_seeds_index
from instructedit.testing import save_tiny_pipeline

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def _dataset(root: Path, count: int = 32) -> Path:
    """Recoloured squares on random backgrounds, one caption folder each."""
    rng = np.random.default_rng(0)
    for index in range(count):
        old, new = rng.choice(list(COLOURS), 2, replace=False)
        before = np.full((16, 16, 3), rng.integers(0, 256, 3), np.uint8)
        after = before.copy()
        before[4:12, 4:12], after[4:12, 4:12] = COLOURS[old], COLOURS[new]
        prompt = {"input": f"a {old} square", "edit": f"make it {new}", "output": f"a {new} square"}
        sample = FolderSample(index, Image.fromarray(before), Image.fromarray(after), {})
        write_caption_folder(root, index, prompt, [sample])
    write_seeds_index(root)
    return root


def _command(launcher: str, config: Path) -> list[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    if launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        start += ["--master_addr", "127.0.0.1", "--master_port", port]
    else:
        start = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        start += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
        start += ["--dynamo_backend", "no", "--main_process_port", port]
    return [*start, "-m", "instructedit", "train", "--config", str(config)]


def _write_config(folder: Path, model: Path, data: Path, steps: int) -> Path:
    config = folder / "run.toml"
    config.write_text(
        f'model = "{model}"\n[data]\nfolder = "{data}"\n[train]\n'
        f'output_dir = "{folder / "run"}"\nresolution = 16\nbatch_size = 4\n'
        f"max_steps = {steps}\ncheckpoint_every = 10\nlog_every = 1\nlearning_rate = 1e-3\n"
        'log_with = "none"\n',
        encoding="utf-8",
    )
    return config


def _check(folder: Path, steps: int) -> list[str]:
    """What is wrong with a finished run (nothing: an empty list)."""
    problems = []
    metrics = folder / "run" / "metrics.jsonl"
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    if logged != list(range(1, steps + 1)):
        problems.append(f"steps logged {logged}")
    if not (folder / "run" / "pipeline" / "model_index.json").is_file():
        problems.append("no export")
    leftovers = list((folder / "run" / "checkpoints").glob(".*"))
    if leftovers:
        problems.append(f"staging left: {leftovers}")
    return problems


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def _kill_at_first_checkpoint(command: list[str], env: dict[str, str], folder: Path) -> int:
    """Starts the job and SIGKILLs its whole process tree when a checkpoint appears; returns the
    step of the checkpoint it was killed after."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = folder / "run" / "checkpoints"
    while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        if process.poll() is not None:
            raise RuntimeError("the job ended before its first checkpoint")
        time.sleep(0.05)
    # torchrun starts each process in a session of its own: kill them by their parent.
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in [process.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    return max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--launchers", nargs="+", default=["torchrun", "accelerate"])
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = save_tiny_pipeline(root / "sd", kind="text_to_image")
        data = _dataset(root / "data")
        for launcher in args.launchers:
            first: Path | None = None
            for number in range(args.runs):
                folder = root / f"{launcher}-{number}"
                folder.mkdir()
                start = time.perf_counter()
                result = _run(
                    _command(launcher, _write_config(folder, model, data, args.steps)), env
                )
                problems = (
                    [f"exit {result.returncode}: {result.stderr[-500:]}"]
                    if result.returncode
                    else _check(folder, args.steps)
                )
                failures += bool(problems)
                first = first or (None if problems else folder)
                status = "ok" if not problems else "; ".join(problems)
                print(f"{launcher} run {number + 1}: {time.perf_counter() - start:.1f} s, {status}")
            folder = root / f"{launcher}-killed"
            folder.mkdir()
            command = _command(launcher, _write_config(folder, model, data, args.steps))
            step = _kill_at_first_checkpoint(command, env, folder)
            result = _run(command, env)
            problems = (
                [f"exit {result.returncode}"] if result.returncode else _check(folder, args.steps)
            )
            if first is not None and not problems:
                losses = [
                    [
                        json.loads(line)["loss"]
                        for line in (f / "run" / "metrics.jsonl").read_text().splitlines()
                    ]
                    for f in (folder, first)
                ]
                loss_gap = float(np.max(np.abs(np.subtract(*losses))))
                unets = [
                    load_file(
                        str(f / "run" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
                    )
                    for f in (folder, first)
                ]
                weight_gap = max((unets[0][k] - unets[1][k]).abs().max().item() for k in unets[1])
                if max(loss_gap, weight_gap) > 1e-5:
                    problems.append(f"differs: losses {loss_gap:.2e}, UNet {weight_gap:.2e}")
                print(
                    f"{launcher} killed after step {step}, restarted: losses differ by "
                    f"{loss_gap:.2e}, exported UNet by {weight_gap:.2e}"
                )
            failures += bool(problems)
            if problems:
                print(f"{launcher} killed and restarted: {'; '.join(problems)}")
    print(f"{failures} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
