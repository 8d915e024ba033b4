"""A tiny training job that test_distributed.py runs under torchrun or accelerate launch.

python ddp_job.py OUTPUT [--steps N] [--checkpoint-every N] [--kill-after STEP]

Every process trains the tiny editor on the colour records and, when training ends, writes its
own UNet as ``OUTPUT/ranks/rank-<i>.safetensors`` so the test can check that the ranks agree.
With ``--kill-after STEP``, process 0 SIGKILLs the whole job (the launcher and every process)
right after that step, as a lost machine would; with ``--record-gradients`` each process writes
the gradients of the first optimiser step as ``OUTPUT/ranks/gradients-<i>.safetensors``.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

from diffusers import DDPMScheduler
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import colour_records
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components
from instructedit.training import TrainConfig, Trainer, to_edit_unet


class DyingTrainer(Trainer):
    """Kills the job after step ``kill_after``, once that step's checkpoint work is done: every
    process of the job (their pids are in ``pids``) and the launcher, as a lost machine would."""

    kill_after: int | None = None
    pids: Path
    gradients: Path | None = None

    def create_optimizer(self):
        """Also records the gradients the first optimiser step applies (all-reduced, clipped)."""
        optimizer, schedule = super().create_optimizer()
        if self.gradients is not None:
            target = self.gradients

            def record(optimizer, args, kwargs):
                grads = {
                    name: parameter.grad.detach().clone()
                    for name, parameter in self.unet.named_parameters()
                    if parameter.grad is not None
                }
                save_file(grads, str(target))
                handle.remove()

            handle = optimizer.register_step_pre_hook(record)
        return optimizer, schedule

    def end_of_step(self, state, done, loss):
        super().end_of_step(state, done, loss)
        if done == self.kill_after and state.accelerator.is_main_process:
            for file in self.pids.iterdir():
                if int(file.read_text()) != os.getpid():
                    os.kill(int(file.read_text()), signal.SIGKILL)
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def make_trainer(output, *, steps, checkpoint_every, trainer_class=Trainer):
    """The job's Trainer: the tiny editor on the colour records, batch 4 a process."""
    parts = tiny_components(in_channels=4, seed=0)
    config = TrainConfig(
        output_dir=str(output / "run"),
        resolution=16,
        batch_size=4,
        max_steps=steps,
        learning_rate=1e-3,
        checkpoint_every=checkpoint_every,
        log_every=1,
        ema_decay=0.99,
        log_with="none",
    )
    return trainer_class(
        config,
        unet=to_edit_unet(parts["unet"]),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=colour_records(),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--record-gradients", action="store_true")
    args = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    pids = args.output / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / str(rank)).write_text(str(os.getpid()))
    trainer = make_trainer(
        args.output,
        steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        trainer_class=DyingTrainer,
    )
    trainer.kill_after, trainer.pids = args.kill_after, pids
    ranks = args.output / "ranks"
    ranks.mkdir(exist_ok=True)
    if args.record_gradients:
        trainer.gradients = ranks / f"gradients-{rank}.safetensors"
    trainer.train(progress=False)
    trainer.export()
    weights = {k: v.detach().contiguous() for k, v in trainer.unet.state_dict().items()}
    save_file(weights, str(ranks / f"rank-{rank}.safetensors"))


if __name__ == "__main__":
    main()
