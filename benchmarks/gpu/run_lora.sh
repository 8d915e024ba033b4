#!/bin/bash
# One GPU call: full fine-tuning against LoRA (rank 16) on SDXL's full-size editing UNet at 512²,
# bf16 autocast and gradient checkpointing, then at half width: peak CUDA memory and images/s.
# Run from the repository root: bash benchmarks/gpu/run_lora.sh
source benchmarks/gpu/_setup.sh
python3 -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())" || exit 1
for width in 1 0.5; do
  timeout "${LORA_S:-240}" python3 benchmarks/lora_memory.py --device cuda --width "$width" \
    --size 512 --batch 4 --steps 5 --bf16 --gradient-checkpointing
  echo "rc $?"
done
