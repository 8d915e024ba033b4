# Sourced by run.sh and run_t2i.sh, from the repository root: a GPU call's environment. Installs
# the wheels in .whl (packages the machine lacks), puts src/ on the path and copies everything
# the call prints to $OUT/log.txt.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
