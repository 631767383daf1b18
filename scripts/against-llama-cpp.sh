#!/usr/bin/env bash
# Times tvl against llama.cpp on this machine, the same shape and bytes, alternating run by run
# (the README's "Against llama.cpp on the same host"). Not part of CI: it downloads and builds
# llama.cpp (about 10 minutes on two cores) and takes about a minute a round.
#
#   scripts/against-llama-cpp.sh [ROUNDS] [MODEL]      (defaults: 6, stories110M)
#
# llama.cpp: the sources PyPI's llama-cpp-python 0.3.36 carries (llama.cpp build 0c1e570),
# CMake Release with GGML_NATIVE, built once into $WORK (default /tmp/tvl-llama-cpp); set
# LLAMA_CPP=/path/to/llama.cpp (with build/bin/llama-bench) to use another build. The model:
# random weights of MODEL's config as an f32 GGUF (scripts/llama-cpp-gguf.py, the 32000-token
# tokenizer of ../shared), quantized by llama-quantize to Q8_0, Q4_0 (which keeps the tied
# embedding in Q6_K) and Q4_0 --pure. Each row: `llama-bench -p 0 -n 64 -r 5` then
# `tvl bench --tokens 64 --sequences 1 --repetitions 5` (the same 64 positions from an empty
# cache), with tvl's fraction of its own model-size probe. Needs cmake, a C++ compiler,
# Python 3.11 with numpy, and network for the sources.
set -euo pipefail
rounds=${1:-6}
model=${2:-stories110M}
top=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/tvl-llama-cpp}
mkdir -p "$work"

llama=${LLAMA_CPP:-$work/llama_cpp_python-0.3.36/vendor/llama.cpp}
if [ ! -x "$llama/build/bin/llama-bench" ]; then
    if [ ! -d "$llama" ]; then
        echo "downloading llama-cpp-python 0.3.36's sources from PyPI" >&2
        url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ |
            grep -m1 -o 'https://files.pythonhosted.org[^"#]*llama_cpp_python-0.3.36.tar.gz')
        curl -fsSL "$url" | tar xz -C "$work"
    fi
    echo "building llama-bench and llama-quantize (CMake Release, GGML_NATIVE)" >&2
    log=$work/llama-cpp-build.log
    if ! { cmake -S "$llama" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF &&
        cmake --build "$llama/build" -j "$(nproc)" --target llama-bench llama-quantize; } >"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "error: building llama.cpp failed (the whole log: $log)" >&2
        exit 1
    fi
fi
bin=$llama/build/bin

gguf=$work/$model
if [ ! -f "$gguf-f32.gguf" ]; then
    echo "writing $gguf-f32.gguf (random weights of model-configs/$model.toml)" >&2
    PYTHONPATH="$llama/gguf-py" python3 "$top/scripts/llama-cpp-gguf.py" \
        "$top/model-configs/$model.toml" "$top/../shared/models/tokenizer.bin" "$gguf-f32.gguf"
fi
# llama-quantize [--pure] F32 OUT TYPE, its output kept in a log and shown if it fails.
quantize() {
    local out=${*: -2:1}
    [ -f "$out" ] && return
    if ! "$bin/llama-quantize" "$@" >"$work/quantize.log" 2>&1; then
        tail -20 "$work/quantize.log" >&2
        echo "error: llama-quantize $* failed" >&2
        rm -f "$out"
        exit 1
    fi
}
quantize "$gguf-f32.gguf" "$gguf-Q8_0.gguf" Q8_0
quantize "$gguf-f32.gguf" "$gguf-Q4_0.gguf" Q4_0
quantize --pure "$gguf-f32.gguf" "$gguf-Q4_0-pure.gguf" Q4_0

(cd "$top" && cargo build --release --features cli --quiet)
tvl=$top/target/release/tvl
echo "round weights threads llama.cpp-tok/s tvl-tok/s tvl/llama.cpp tvl-probe-GB/s tvl-of-probe"
for round in $(seq 1 "$rounds"); do
    for pair in Q8_0:q8_0 Q4_0-pure:q4_0_pure Q4_0:q4_0; do
        for threads in 1 2; do
            theirs=$("$bin/llama-bench" -m "$gguf-${pair%%:*}.gguf" -p 0 -n 64 -r 5 -t "$threads" -o csv 2>/dev/null |
                tail -1 | awk -F, '{gsub(/"/, "", $(NF-1)); printf "%.1f", $(NF-1)}')
            report=$("$tvl" bench "$model" --quant "${pair##*:}" --threads "$threads" --tokens 64 --sequences 1 --repetitions 5 2>&1)
            ours=$(echo "$report" | awk '/^decode/ {print $2; exit}')
            if [ -z "$theirs" ] || [ -z "$ours" ]; then
                echo "error: no decode speed from llama-bench ('$theirs') or tvl bench ('$ours'); tvl said:" >&2
                echo "$report" >&2
                exit 1
            fi
            probe=$(echo "$report" | awk '/^roofline/ {print $3; exit}')
            fraction=$(echo "$report" | awk '/^fraction / {print $2; exit}')
            echo "$round ${pair##*:} $threads $theirs $ours $(awk "BEGIN {printf \"%.2f\", $ours / $theirs}") $probe $fraction"
        done
    done
done
