#!/usr/bin/env bash
# Runs the test suite for aarch64-unknown-linux-gnu under qemu user-mode emulation: what
# depends on the architecture (all but the host-side code generator, proc macro and fuzz
# harness, whose tests run in the native suite) with qemu's default CPU (which has dotprod, so
# the kernel tests run the scalar, NEON and NEON dotprod paths), then with QEMU_CPU=cortex-a72
# (plain NEON) what depends on what the CPU has: the kernel paths it detects (scalar and NEON,
# tested), the golden stories on each of them (dotprod detected wrongly would stop them with an
# illegal instruction), and the path chosen at load (the `tvl bench` line is checked).
# Emulation proves correctness, never speed. Installs Debian's cross toolchain if it is
# missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

installed() {
  [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && command -v aarch64-linux-gnu-gcc >/dev/null \
    && command -v qemu-aarch64-static >/dev/null \
    && ls -d /usr/lib/rustlib/aarch64-unknown-linux-gnu >/dev/null 2>&1
}
if ! installed; then
  echo "== installing the aarch64 cross toolchain and qemu (Debian packages)"
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
fi

# Debian's toolchain has the aarch64 standard library (rustup cannot add targets here).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# No -L: the cross sysroot's old glibc hangs on thread creation; the multiarch one works.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
# Tests that start the `tvl` binary start it through qemu too (no binfmt_misc here).
export TVL_TEST_RUNNER=qemu-aarch64-static
export CARGO_TARGET_DIR=target/aarch64
# Incremental builds split each crate into many more codegen units, which inline less: run
# standalone with them, the suite took 460–480 s under qemu where .ci/run (which sets this too)
# took 230–280 s.
export CARGO_INCREMENTAL=0
target=aarch64-unknown-linux-gnu

# The same selection in every cargo command below (so nothing is compiled twice). The code
# generator and the proc macro run on the host; the fuzz harness's targets are the runtime's
# parsers, which the hostile and bad-input tests run here. (Their tests would also have
# compiled syn, toml and the harness for the target, for nothing.)
cargo_test=(/usr/bin/cargo test --target $target --workspace --exclude tvl-codegen --exclude tvl-macros
  --exclude tvl-fuzz --all-features)
# Under emulation the slowest tests check a subset that runs the same code (`TVL_TEST_RUNNER`
# below tells them; `tests/suite/common.rs`, `emulated`). Test binaries run one at a time: the
# thread pool's workers spin while they wait, so tests of two binaries at once on 2 cores took
# longer in all (and the pool's timing tests can fail when its workers lag for real).

# The kernel test that says which paths it tested runs on its own, with its output shown (so
# once per CPU, not also in the suite).
paths_test=simd_kernels_match_scalar_for_every_bundled_shape
/usr/bin/cargo --version
for cpu in default cortex-a72; do
  echo "== aarch64 under qemu, CPU: $cpu"
  if [ "$cpu" = default ]; then
    unset QEMU_CPU
    expected=neon-dotprod
    "${cargo_test[@]}" -- --skip $paths_test
  else
    export QEMU_CPU=$cpu
    expected=neon
    "${cargo_test[@]}" --test suite golden::
  fi
  # Show which kernels ran: this test fails unless a SIMD path was tested.
  log="$CARGO_TARGET_DIR/kernel-paths-$cpu.log"
  if ! "${cargo_test[@]}" --test kernels -- --exact $paths_test --nocapture >"$log" 2>&1; then
    cat "$log"
    exit 1
  fi
  grep -E "kernel paths tested|test result" "$log"
  # The path chosen at load: neon-dotprod where the CPU has dotprod, else neon.
  for model in stories260K.bin stories260K-q80.bin; do
    report=$(TVL_CACHE_DIR="$CARGO_TARGET_DIR/cache" qemu-aarch64-static "$CARGO_TARGET_DIR/$target/debug/tvl" \
      bench "../shared/models/$model" --tokens 8 --repetitions 1 --sequences 1 --no-probes)
    echo "$report" | grep -E "model|kernels"
    if ! echo "$report" | grep -qE "^kernels / threads +$expected /"; then
      echo "error: on $cpu the kernels chosen at load should be $expected" >&2
      exit 1
    fi
  done
done
echo "== aarch64 suites passed"
