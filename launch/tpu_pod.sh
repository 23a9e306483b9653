#!/usr/bin/env bash
# Runs vlalign on every worker of a Cloud TPU VM slice (a pod slice or a single host) with one
# config and a gs:// workdir. Creates the TPU VM if it does not exist, copies this checkout to
# every worker, installs it there, and starts the same main command on all workers at once
# (JAX finds the other workers itself: vlalign.main calls jax.distributed.initialize() when it
# sees TPU_WORKER_HOSTNAMES with more than one host).
#
# Usage:
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION -- [main.py flags...]
#   e.g. launch/tpu_pod.sh vlalign-b7 us-central2-b v4-256 tpu-ubuntu2204-base -- \
#          --config=configs/align_b7.py --workdir=gs://BUCKET/align_b7 \
#          --config.data.sources="('tfrecord:gs://BUCKET/alt-text/train-*',)" \
#          --config.data.tokenizer.vocab_file=gs://BUCKET/alt-text/vocab.txt
# Environment: PROJECT (gcloud project, optional), SPOT=1 for a spot VM, REQUIREMENTS (default
# requirements.txt; on TPU add jax[tpu] to it or set EXTRA_PIP='jax[tpu]==<version>').
# Preemption: a spot/preemptible TPU gets SIGTERM; vlalign saves a checkpoint and exits 0.
# Start the same command again to resume from the newest checkpoint in the workdir.
set -euo pipefail
name=${1:?TPU name}; zone=${2:?zone}; accel=${3:?accelerator type}; version=${4:?runtime version}
shift 4
[[ "${1:-}" == "--" ]] && shift
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project="$PROJECT")
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! gcloud compute tpus tpu-vm describe "$name" --zone="$zone" "${project_flag[@]}" >/dev/null 2>&1; then
  echo "creating TPU VM $name ($accel, $version) in $zone" >&2
  spot=()
  [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
  gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accel" \
    --version="$version" "${project_flag[@]}" "${spot[@]}"
fi

tarball=$(mktemp /tmp/vlalign.XXXXXX.tar.gz)
trap 'rm -f "$tarball"' EXIT
git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
echo "copying $(git -C "$root" rev-parse --short HEAD) to all workers" >&2
gcloud compute tpus tpu-vm scp "$tarball" "$name":/tmp/vlalign.tar.gz --worker=all \
  --zone="$zone" "${project_flag[@]}"

args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$name" --worker=all --zone="$zone" "${project_flag[@]}" \
  --command="set -e; rm -rf ~/vlalign && mkdir -p ~/vlalign && tar xzf /tmp/vlalign.tar.gz -C ~/vlalign \
    && cd ~/vlalign && python3 -m venv .venv && . .venv/bin/activate \
    && pip install -q -r ${REQUIREMENTS:-requirements.txt} ${EXTRA_PIP:-} -e . \
    && python -m vlalign.main $args"
