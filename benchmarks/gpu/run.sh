#!/bin/bash
# One GPU lease, one call: ShapesWorld editors until T0+TRAIN_S, then the CUDA benchmarks.
# Needs the folder benchmarks/gpu/pack.py writes (.gpu) and, where the machine lacks them,
# wheels in .whl (diffusers); run from the repository root: bash benchmarks/gpu/run.sh
T0=$(date +%s)
TRAIN_S=${TRAIN_S:-340}
END_S=${END_S:-565}
source benchmarks/gpu/_setup.sh
gunzip -f "${SHAPES_GPU_DATA:-.gpu}"/shapes/text_to_image/model/tokenizer/tokenizer.json.gz
export INSTRUCTEDIT_CACHE=/tmp/iecache  # the CLIP tokenizer without open_clip: the run's own copy
mkdir -p /tmp/iecache/clip-tokenizer && cp "${SHAPES_GPU_DATA:-.gpu}"/shapes/text_to_image/model/tokenizer/* /tmp/iecache/clip-tokenizer/
python3 -c "import torch, diffusers, transformers, accelerate, triton; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" || exit 1
python3 benchmarks/gpu/editors.py launch $((T0 + TRAIN_S))
echo "training+export done at +$(( $(date +%s) - T0 )) s"
cd benchmarks
left() { echo $(( T0 + END_S - $(date +%s) )); }
bench() { local cap=$1; shift; local t=$(left); [ "$t" -gt "$cap" ] && t=$cap; if [ "$t" -lt 10 ]; then echo "SKIP $*"; return; fi; echo "==== $* (limit $t s)"; timeout "$t" python3 "$@"; echo "rc $?"; }
bench 45 fused_step.py
bench 40 fused_step.py --dtype float32
bench 80 edit_vs_diffusers.py --sd15 --repeats 3
bench 40 p2p_attention.py
bench 70 train_throughput.py --sd15 --steps 10
echo "all done at +$(( $(date +%s) - T0 )) s"
