#!/usr/bin/env bash
# The device runtime (asr/transcriber.py over an export folder: the device extra's packages, no torch) on
# an emulated arm64 userland: Debian's arm64 Python and aarch64 wheels of onnxruntime, numpy,
# flashlight-text, soundfile and soxr, run under qemu-user-static, must give the same transcripts as the
# x86 runtime on real utterances (greedy, and flashlight's beam search with LM=piece.arpa if given). Functional only: emulated timings mean
# nothing, so none are printed. Needs root for apt (qemu-user-static, arm64 .debs); no chroot or binfmt.
#
#   LM=recipes/fsdd_digits/data/lang/lm_piece3.arpa bash bench/aarch64_check.sh \
#     recipes/fsdd_digits/exp/baseline/model.pt recipes/fsdd_digits/data/corpus/test.jsonl
set -euo pipefail
model=${1:?usage: aarch64_check.sh MODEL MANIFEST [COUNT]}
manifest=${2:?usage: aarch64_check.sh MODEL MANIFEST [COUNT]}
count=${3:-5}
root=${AARCH64_ROOT:-/tmp/speechprune-arm64}
# onnxruntime 1.32's aarch64 wheel crashes (SIGSEGV) on import under Debian 12's qemu 7.2 whatever
# QEMU_CPU is; 1.19.2 runs. On a real board the newest wheel is fine: this pin is the emulator's.
ort_version=${ORT_VERSION:-1.19.2}
python=${PYTHON:-python}
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$(date +%s)
mkdir -p "$root/debs" "$root/rootfs" "$root/site" "$root/wheels"

command -v qemu-aarch64-static >/dev/null || apt-get install -y -q qemu-user-static >/dev/null
if [[ ! -x "$root/rootfs/usr/bin/python3.11" ]]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -q >/dev/null
  (cd "$root/debs" && apt-get download -q \
    python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libc6:arm64 \
    libstdc++6:arm64 libgcc-s1:arm64 zlib1g:arm64 libexpat1:arm64 libffi8:arm64 libssl3:arm64 \
    libbz2-1.0:arm64 liblzma5:arm64 libuuid1:arm64 libcrypt1:arm64 libsqlite3-0:arm64 \
    libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 >/dev/null)
  for deb in "$root"/debs/*.deb; do dpkg -x "$deb" "$root/rootfs"; done
fi
if [[ ! -f "$root/site/onnxruntime-$ort_version.dist-info/METADATA" || ! -d "$root/site/flashlight" ]]; then
  rm -rf "$root/site" "$root/wheels" && mkdir -p "$root/site" "$root/wheels"
  "$python" -m pip download -q --dest "$root/wheels" --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --platform manylinux_2_17_aarch64 "onnxruntime==$ort_version" "numpy<2" flashlight-text soundfile soxr
  for wheel in "$root"/wheels/*.whl; do "$python" -m zipfile -e "$wheel" "$root/site"; done
fi

work=$(mktemp -d)
lm_args=()
[[ -n "${LM:-}" ]] && lm_args=(--lm "$LM")
PYTHONPATH="$repo" "$python" "$repo/bench/aarch64_check.py" prepare "$model" "$manifest" --count "$count" \
  --out "$work" "${lm_args[@]}"
status=0
PYTHONPATH="$root/site:$repo" PYTHONHOME="$root/rootfs/usr" qemu-aarch64-static -L "$root/rootfs" \
  "$root/rootfs/usr/bin/python3.11" "$repo/bench/aarch64_check.py" run "$work" || status=$?
echo "aarch64 check: exit $status after $(( $(date +%s) - started )) s"
exit $status
