#!/bin/bash
# One GPU lease, one call: ShapesWorld's text-to-image variants, pairs and editor (shapes_t2i.py)
# until their deadlines (seconds after the start), after EditPipeline's GPU profile
# (profile_edit.py) when PROFILE_S > 0.
# Needs, where the machine lacks them, wheels in .whl (diffusers, open_clip_torch, ftfy, wcwidth,
# importlib_metadata); run from the repository root: bash benchmarks/gpu/run_t2i.sh
T0=$(date +%s)
source benchmarks/gpu/_setup.sh
python3 -c "import torch, diffusers, transformers, accelerate, triton, open_clip; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'triton', triton.__version__, 'open_clip', open_clip.__version__, torch.cuda.get_device_name())" || exit 1
if [ "${PROFILE_S:-0}" -gt 0 ]; then  # the eighth run's call profiled with PROFILE_S=80
  echo "==== profile_edit.py at +$(( $(date +%s) - T0 )) s"
  timeout "$PROFILE_S" python3 benchmarks/gpu/profile_edit.py --repeats "${PROFILE_REPEATS:-2}"
  echo "rc $? at +$(( $(date +%s) - T0 )) s"
fi
# The eighth run: PROFILE_S=80 T2I_END=255 GEN_END=380 EDITOR_END=535 T2I_VARIANTS=warm,wide,scratch
# A 2x-latent run (prepared and dry-run on the CPU 2026-11-28; the lease was withdrawn before it
# ran). Its autoencoder is trained beforehand on the CPU and carried in .gpu/vae2:
#   GPU_DEVICE=cpu LATENT_DOWNSAMPLING=2 T2I_VAE=.gpu/vae2 \
#     python benchmarks/gpu/shapes_t2i.py autoencoder
# then its decoder is fine-tuned here beside the text-to-image model, and an editor on the
# renderer's pairs trains beside the pairs stage (carry .whl and .gpu):
#   PROFILE_S=0 T2I_END=235 GEN_END=365 EDITOR_END=540 T2I_VARIANTS=scratch T2I_DATA_WORKERS=10
#   DECODER_STEPS=1000 GT_EDITOR=1 SAMPLES=2 CAPTIONS=8000 T2I_VAE=$PWD/.gpu/vae2
#   LATENT_DOWNSAMPLING=2 EDITOR_BATCH=128 EDITOR_CHECKPOINT_EVERY=200 \
#     bash benchmarks/gpu/run_t2i.sh
# It ran on 2026-11-28 (the twelfth run, the ShapesWorld results page); a second, 186 s call
# continued its pairs stage (no phase 1, no editor) from the unpacked run, carried in .gpu/run14:
#   python benchmarks/gpu/shapes_t2i.py carry RUN .gpu/run14     # on the CPU, from unpack.py's RUN
#   PROFILE_S=0 T2I_END=0 GEN_END=170 EDITOR_END=170 CONTINUE_FROM=$PWD/.gpu/run14 SAMPLES=2
#   CAPTIONS=8000 LATENT_DOWNSAMPLING=2 bash benchmarks/gpu/run_t2i.sh    (carry .whl and .gpu)
# .gpu/run14 was then carried again from the second call's unpacked run (2158 caption edits,
# 27.7 MiB; carry refuses an existing folder, so remove the old one first). Its additions fail
# at control strength 0.8 on this latent (the results page), so the next lease starts a new pairs
# stage from its model, the strength drawn per candidate in 0.3-0.8, and trains the editor (one
# 600 s call; .gpu/run14m is `carry ... --no-candidates`, 15.5 MiB; carry .whl and .gpu/run14m):
#   PROFILE_S=0 T2I_END=0 GEN_END=320 EDITOR_END=560 CONTINUE_FROM=$PWD/.gpu/run14m SAMPLES=2
#   CAPTIONS=8000 LATENT_DOWNSAMPLING=2 PAIR_CONTROL_RANGE=0.3,0.8 EDITOR_BATCH=128 \
#   EDITOR_CHECKPOINT_EVERY=200 bash benchmarks/gpu/run_t2i.sh
# (CONTINUE_FROM=$PWD/.gpu/run14, carrying .gpu/run14, instead continues the 2158 edits at 0.8.)
export T2I_END=${T2I_END:-300} GEN_END=${GEN_END:-420} EDITOR_END=${EDITOR_END:-550}
python3 benchmarks/gpu/shapes_t2i.py launch "$T0"
echo "all done at +$(( $(date +%s) - T0 )) s"
