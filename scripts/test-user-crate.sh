#!/usr/bin/env bash
# Builds tests/user-crate as a user's crate would be built (tvl as a renamed path dependency,
# no features), checks that it compiles neither the CLI's dependencies nor the bundled models,
# and that its greedy story equals the reference's, byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
models=../shared/models
export CARGO_TARGET_DIR=target/user-crate
manifest=tests/user-crate/Cargo.toml

if cargo tree --manifest-path $manifest -e normal | grep -E "clap|anyhow"; then
  echo "error: depending on tvl for the attribute pulls in the CLI's dependencies" >&2
  exit 1
fi
cargo build --quiet --manifest-path $manifest
if ls "$CARGO_TARGET_DIR"/debug/build/tvl-*/out/bundled.rs >/dev/null 2>&1 \
  && [ -s "$(ls "$CARGO_TARGET_DIR"/debug/build/tvl-*/out/bundled.rs | head -1)" ]; then
  echo "error: the user crate compiled tvl's bundled models" >&2
  exit 1
fi
tvl_file="$CARGO_TARGET_DIR/stories260K.tvl"
# The converter: $TVL if set (`.ci/run` passes the `tvl` the test suite has just built),
# else this checkout's, built now (a release build of every bundled model: minutes).
if [ -n "${TVL:-}" ]; then
  "$TVL" convert "$models/stories260K.bin" -o "$tvl_file" 2>/dev/null
else
  cargo tvl convert "$models/stories260K.bin" -o "$tvl_file" 2>/dev/null
fi
expected=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["text"])' \
  ../shared/golden/stories260K-generate.jsonl)
got=$("$CARGO_TARGET_DIR/debug/user-crate" "$tvl_file" "$models/tok512.bin" "Once upon a time")
if [ "$got" != "$expected" ]; then
  echo "error: the user crate's story differs from the reference" >&2
  diff <(echo "$expected") <(echo "$got") | head -5 >&2
  exit 1
fi
echo "user crate (renamed dependency, no features): reference story reproduced"
