#!/usr/bin/env bash
# Builds the bare-metal firmwares and runs each under qemu-system with a timeout:
#   firmware/aarch64-virt  qemu-system-aarch64 -M virt, -cpu cortex-a72 (NEON) and -cpu max
#                          (NEON dotprod): stories260K f32 (5 golden cases) and int8 (3 cases)
#   firmware/cortex-m      qemu-system-arm -M mps2-an386 (Cortex-M4F, scalar kernels):
#                          stories260K f32 (5 golden cases)
# prints each output and exits 0 only if every story equals ../shared/golden byte for byte.
# Installs what is missing (Debian packages, needs root): rustc-web, cargo-web, rust-web-src
# (Rust with its library source, for -Zbuild-std=core under RUSTC_BOOTSTRAP=1), lld-16 and
# qemu-system-arm (which has qemu-system-aarch64 too).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
models=$root/../shared/models
golden=$root/../shared/golden

if [ ! -f "$models/stories260K.bin" ] || [ ! -f "$golden/stories260K-generate.jsonl" ]; then
  echo "SKIPPED: $models or $golden is missing; no firmware was built or compared" >&2
  exit 0
fi

installed() {
  [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library/core ] \
    && command -v ld.lld-16 >/dev/null && command -v qemu-system-aarch64 >/dev/null \
    && command -v qemu-system-arm >/dev/null
}
if ! installed; then
  echo "== installing rustc-web, rust-web-src, lld-16, qemu-system-arm (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-16 qemu-system-arm
fi

# The weights, converted on the host by tvl itself: $TVL if set (`.ci/run` passes the `tvl`
# its test suite has just built), else this checkout's, built now (a release build of every
# bundled model: minutes).
out=$root/target/firmware
mkdir -p "$out"
tvl() {
  if [ -n "${TVL:-}" ]; then "$TVL" "$@"; else cargo run -q --release --features cli -- "$@"; fi
}
tvl convert "$models/stories260K.bin" -o "$out/stories260K.tvl"
tvl convert "$models/stories260K-q80.bin" -o "$out/stories260K-q80.tvl"
export TVL_F32_WEIGHTS=$out/stories260K.tvl TVL_Q80_WEIGHTS=$out/stories260K-q80.tvl TVL_TOKENIZER=$models/tok512.bin

# Debian's Rust 1.96 with its library source builds `core` for targets without std.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
build() { # firmware directory, target
  # A failed build must stop the script (set -e does not reach into $(...)).
  (cd "firmware/$1" && /usr/bin/cargo build -q --release --target-dir "$out/$1") >&2 || return 1
  echo "$out/$1/$2/release/tvl-firmware-${1%-virt}"
}
echo "== building firmware/aarch64-virt"
aarch64=$(build aarch64-virt aarch64-unknown-none)
echo "== building firmware/cortex-m"
cortex_m=$(build cortex-m thumbv7em-none-eabihf)

# The three machines run at once (each qemu-system is one thread; -icount makes their
# output independent of the host's speed), then each output is shown and compared in turn.
status=0
labels=()
start() { # label, command...
  local label=$1 log=$out/$1.txt
  shift
  echo "$*" >"$out/$label.command"
  (timeout 600 "$@" >"$log" 2>&1 && code=0 || code=$?; echo $code >"$out/$label.status") &
  labels+=("$label")
}
# -icount shift=0: the virtual clock advances 1 ns per instruction, so the firmware's timer
# readings count instructions (deterministic, unlike time; the compare script prints them).
start aarch64-cortex-a72 qemu-system-aarch64 -M virt -cpu cortex-a72 -icount shift=0 -nographic -semihosting -kernel "$aarch64"
start aarch64-max qemu-system-aarch64 -M virt -cpu max -icount shift=0 -nographic -semihosting -kernel "$aarch64"
start cortex-m4 qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic \
  -semihosting-config enable=on,target=native -kernel "$cortex_m"
wait
for label in "${labels[@]}"; do
  log=$out/$label.txt
  echo "== $label: $(cat "$out/$label.command")"
  if [ "$(cat "$out/$label.status")" != 0 ]; then
    echo "FAILED: $label exited with an error (status $(cat "$out/$label.status"))" >&2
    status=1
  fi
  cat "$log"
  python3 scripts/compare-firmware-output.py "$golden" "$log" || status=1
done

echo "== sizes in bytes (.text code; .rodata read-only data, the weights included; .bss the static arena and buffers)"
for elf in "$aarch64" "$cortex_m"; do
  echo "${elf#"$root/"}"
  size -A "$elf" | awk '$1 ~ /^\.(vector_table|text|rodata|data|bss)$/ { printf "  %-14s %9d\n", $1, $2 }'
done
if [ $status = 0 ]; then echo "== bare-metal firmwares: every story equals its golden text"; fi
exit $status
