"""Full fine-tuning against LoRA on an SDXL-shaped editing UNet: peak memory and images/s.

    python benchmarks/lora_memory.py                      # SDXL's layout at a quarter width, 256²
    python benchmarks/lora_memory.py --width 0.5 --steps 3
    python benchmarks/lora_memory.py --device cuda --width 1 --size 512 --bf16 --gradient-checkpointing

The UNet has SDXL's layout (three levels, 1/2/10 transformer layers, linear projections, 2048-wide
cross-attention, the pooled-text and size-id embedding, 8 input channels) with
``block_out_channels`` scaled by ``--width``. Each side trains ``--steps`` AdamW steps (after one
warm-up step) on the same random batch of ``--batch`` examples of ``--size``² pixels (latents an
eighth of that) in a fresh child process, one after the other, and reports the peak memory (the
child's resident memory on a CPU; the most CUDA memory allocated on a GPU), the training state
it holds after a step (gradients and optimiser moments, summed over the tensors themselves), and
images per second. ``--bf16`` autocasts the forward to bfloat16 (float32 weights, as
``mixed_precision="bf16"`` trains). Full fine-tuning trains every weight; LoRA trains rank ``--rank`` adapters on
every attention projection plus the input convolution (``TrainConfig(lora_rank=...)``'s
defaults). ``--gradient-checkpointing`` turns it on for both sides.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from typing import Any


def sdxl_shaped_unet(width: float) -> Any:
    from diffusers import UNet2DConditionModel

    channels = tuple(round(c * width / 16) * 16 for c in (320, 640, 1280))
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=channels,
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=6 * 256 + 1280,
        cross_attention_dim=2048,
        norm_num_groups=16,
    )


def run(mode: str, args: argparse.Namespace, results: Any) -> None:
    import torch

    from instructedit.lora import add_lora
    from instructedit.training._config import LORA_TARGETS

    torch.manual_seed(0)
    device = torch.device(args.device)
    unet = sdxl_shaped_unet(args.width).train()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if mode == "lora":
        add_lora(unet, rank=args.rank, targets=LORA_TARGETS, seed=0)
    unet.to(device)
    trained = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    generator = torch.Generator().manual_seed(1)
    batch, cells, size = args.batch, args.size // 8, float(args.size)
    sample = torch.randn(batch, 8, cells, cells, generator=generator).to(device)
    hidden = torch.randn(batch, 77, 2048, generator=generator).to(device)
    added = {
        "text_embeds": torch.randn(batch, 1280, generator=generator).to(device),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch, device=device),
    }
    target = torch.randn(batch, 4, cells, cells, generator=generator).to(device)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            prediction = unet(sample, timesteps, hidden, added_cond_kwargs=added).sample
        torch.nn.functional.mse_loss(prediction.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # hold the gradients: they are the state

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up; creates the optimiser's moments
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    state = sum(p.grad.numel() * p.grad.element_size() for p in trained if p.grad is not None)
    state += sum(
        value.numel() * value.element_size()
        for per_parameter in optimizer.state.values()
        for value in per_parameter.values()
        if torch.is_tensor(value)
    )
    results.put(
        {
            "mode": mode,
            "parameters": sum(p.numel() for p in unet.parameters()),
            "trained": sum(p.numel() for p in trained),
            "state_bytes": state,
            "peak_bytes": (
                torch.cuda.max_memory_allocated(device)
                if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            ),
            "images_per_s": batch / seconds,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = {}
    for mode in ("full", "lora"):  # one child at a time: two torch processes slow each other
        results = context.Queue()
        child = context.Process(target=run, args=(mode, args, results))
        child.start()
        rows[mode] = results.get()
        child.join()
    gib = 2**30
    print(
        f"SDXL-shaped editing UNet at width {args.width} ({rows['full']['parameters'] / 1e6:.0f}M "
        f"parameters), batch {args.batch} at {args.size}², {args.steps} steps, LoRA rank "
        f"{args.rank}, {args.device}"
        + (", bf16 autocast" if args.bf16 else "")
        + (", gradient checkpointing" if args.gradient_checkpointing else "")
    )
    print()
    print("| run | trained parameters | training state (GiB) | peak memory (GiB) | images/s |")
    print("| --- | --- | --- | --- | --- |")
    for mode, row in rows.items():
        print(
            f"| {mode} | {row['trained'] / 1e6:.2f}M | {row['state_bytes'] / gib:.3f} | "
            f"{row['peak_bytes'] / gib:.2f} | {row['images_per_s']:.2f} |"
        )
    full, lora = rows["full"], rows["lora"]
    print()
    print(
        f"LoRA / full: training state {lora['state_bytes'] / full['state_bytes']:.3f}×, peak "
        f"memory {lora['peak_bytes'] / full['peak_bytes']:.2f}×, images/s "
        f"{lora['images_per_s'] / full['images_per_s']:.2f}×"
    )


if __name__ == "__main__":
    main()
