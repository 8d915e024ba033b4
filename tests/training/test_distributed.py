"""The Trainer as one job of several processes (torchrun, accelerate launch), on this CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

JOB = Path(__file__).with_name("ddp_job.py")
STEPS = 8

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(launcher, output, *options, processes=2):
    port = str(_free_port())
    if launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        start += ["--master_addr", "127.0.0.1", "--master_port", port]
    elif launcher == "accelerate":
        start = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        start += ["--num_processes", str(processes), "--num_machines", "1"]
        start += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
    else:
        start = [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*start, str(JOB), str(output), *options],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _steps_and_losses(output):
    lines = (output / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r["step"] for r in records], [r["loss"] for r in records]


def _exported_unet(output):
    folder = output / "run" / "pipeline" / "unet"
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted")
    result = _launch("torchrun", output, "--steps", str(STEPS))
    assert result.returncode == 0, result.stderr[-4000:]
    return output


def _assert_one_job(output):
    steps, _ = _steps_and_losses(output)
    assert steps == list(range(1, STEPS + 1))  # each step logged once, by one writer
    checkpoints = sorted(p.name for p in (output / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000006", "step-0000008"]  # the last two kept, no partial left
    state = json.loads(
        (output / "run" / "checkpoints" / "step-0000008" / "trainer_state.json").read_text()
    )
    assert state["num_processes"] == 2
    first, second = (load_file(str(output / "ranks" / f"rank-{i}.safetensors")) for i in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)  # DDP kept them equal
    assert (output / "run" / "pipeline" / "model_index.json").is_file()


def test_a_torchrun_job_logs_each_step_once_and_its_ranks_agree(uninterrupted):
    _assert_one_job(uninterrupted)


def test_an_accelerate_launch_job_equals_the_torchrun_job(uninterrupted, tmp_path):
    result = _launch("accelerate", tmp_path, "--steps", str(STEPS))
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_one_job(tmp_path)
    assert _steps_and_losses(tmp_path) == _steps_and_losses(uninterrupted)


def test_a_killed_job_restarted_equals_the_uninterrupted_job(uninterrupted, tmp_path):
    killed = _launch("torchrun", tmp_path, "--steps", str(STEPS), "--kill-after", "5")
    assert killed.returncode != 0
    assert not (tmp_path / "run" / "pipeline").exists()
    steps, _ = _steps_and_losses(tmp_path)
    assert steps == [1, 2, 3, 4, 5]
    result = _launch("torchrun", tmp_path, "--steps", str(STEPS))
    assert result.returncode == 0, result.stderr[-4000:]
    steps, losses = _steps_and_losses(tmp_path)
    expected_steps, expected_losses = _steps_and_losses(uninterrupted)
    assert steps == expected_steps  # resumed from step 3: steps 4 and 5 are logged once
    assert losses == pytest.approx(expected_losses, abs=1e-5)
    resumed, reference = _exported_unet(tmp_path), _exported_unet(uninterrupted)
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-5) for k in reference)


def test_resuming_with_another_process_count_is_refused(uninterrupted, tmp_path):
    import shutil

    shutil.copytree(uninterrupted / "run", tmp_path / "run")
    result = _launch("python", tmp_path, "--steps", str(STEPS + 2), processes=1)
    assert result.returncode != 0
    assert "written by a run with other settings (num_processes 2 there, 1 here)" in result.stderr


def test_a_two_process_step_is_one_step_on_both_batches(tmp_path):
    """DDP averages the gradients: the first step of two processes of batch 4 applies the
    gradient of one process's mean loss over the same two batches, with the same random draws.
    (Gradients are compared, not the weights after AdamW: its first step divides each gradient
    element by its own magnitude, which turns float noise in a tiny element into 1e-4 of weight.)"""
    sys.path.insert(0, str(JOB.parent))
    from ddp_job import make_trainer

    from instructedit.training import StepBatches, TrainingExamples
    from instructedit.training._trainer import _collate

    result = _launch(
        "torchrun",
        tmp_path / "job",
        "--steps",
        "1",
        "--checkpoint-every",
        "1",
        "--record-gradients",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    job = [
        load_file(str(tmp_path / "job" / "ranks" / f"gradients-{i}.safetensors")) for i in (0, 1)
    ]
    assert all(torch.equal(job[0][k], job[1][k]) for k in job[0])  # every rank applies the same

    trainer = make_trainer(tmp_path / "one", steps=1, checkpoint_every=1)
    state = trainer.setup()
    config = trainer.config
    examples = TrainingExamples(
        trainer.source, resolution=config.resolution, resize=config.resolution, flip=True
    )
    losses = []
    for rank in (0, 1):
        (keys,) = StepBatches(
            len(trainer.source), 4, seed=config.seed, start=0, stop=1, rank=rank, ranks=2
        )
        batch = _collate([examples[key] for key in keys])
        losses.append(
            trainer._loss(state.unet, None, batch, 0, rank, state.empty_prompt, state.accelerator)
        )
    ((losses[0] + losses[1]) / 2).backward()
    torch.nn.utils.clip_grad_norm_(state.unet.parameters(), config.max_grad_norm)
    one = {name: p.grad for name, p in state.unet.named_parameters() if p.grad is not None}
    assert job[0].keys() == one.keys()
    assert max((job[0][k] - one[k]).abs().max().item() for k in one) <= 1e-5
    assert abs(losses[0].item() - losses[1].item()) > 1e-4  # the ranks' batches differ
