#!/bin/bash
# One GPU call: per-edit time of EditPipeline (eager, speed presets, compiled with CUDA graphs,
# channels-last and fused QKV) against diffusers eager and compiled, SD-1.5-sized, 512², fp16.
# Needs, where the machine lacks them, wheels in .whl (diffusers); run from the repository root:
# bash benchmarks/gpu/run_speed.sh
source benchmarks/gpu/_setup.sh
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, torch.cuda.get_device_name())" || exit 1
timeout "${SPEED_S:-540}" python3 benchmarks/gpu/edit_speed.py --repeats "${REPEATS:-3}"
echo "rc $?"
