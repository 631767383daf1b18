#!/usr/bin/env bash
# Rounds of `tvl bench` over the quantized files and both thread counts, a line per run with
# both probes and where the two vCPUs were (the performance log's tables since the
# twenty-eighth session). Not part of CI: a round takes about two minutes, and the machine
# should be otherwise idle (no build running).
#
#   scripts/bench-rounds.sh [ROUNDS] [MODEL] [QUANTS]    (defaults: 4, stories110M, "q4_0 q8_0 q4_0_pure")
#
# Each line: the weights, the threads, the round trip of one cache line between two threads
# pinned to CPUs 0 and 1 just before the run (on a shared VM, 50-80 ns when the host runs
# the vCPUs on cores that share a cache, 300 ns and more when farther apart; "-" without a C
# compiler or a second CPU), tok/s, the model-size probe and the decode's fraction of it,
# the DRAM probe and the fraction of that. Set TVL=path/to/tvl to time another build.
set -euo pipefail
rounds=${1:-4}
model=${2:-stories110M}
quants=${3:-q4_0 q8_0 q4_0_pure}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${TVL:-}" ]; then
    (cd "$top" && cargo build --release --features cli --quiet)
    TVL=$top/target/release/tvl
fi

# The round trip: one thread sets a flag, the other answers, 200,000 times.
cat >"$work/round-trip.c" <<'EOF'
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
enum { N = 200000 };
static _Alignas(64) atomic_int flag;
static int pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (int i = 0; i < N; i++) {
        while (atomic_load(&flag) != 2 * i + 1) {}
        atomic_store(&flag, 2 * i + 2);
    }
    return 0;
}
int main(void) {
    pthread_t other;
    if (pin(0) != 0 || pthread_create(&other, 0, answer, 0) != 0) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        atomic_store(&flag, 2 * i + 1);
        while (atomic_load(&flag) != 2 * i + 2) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(other, 0);
    printf("%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N);
    return 0;
}
EOF
round_trip() { echo -; }
if [ "$(nproc)" -ge 2 ] && cc -O2 -pthread "$work/round-trip.c" -o "$work/round-trip" 2>/dev/null; then
    round_trip() { echo "$("$work/round-trip" || echo "?") ns"; }
fi

field() { grep -m1 "^$1" <<<"$2" | awk -v n="$3" '{print $n}'; }
for round in $(seq 1 "$rounds"); do
    for quant in $quants; do
        for threads in 1 2; do
            where=$(round_trip)
            out=$("$TVL" bench "$model" --quant "$quant" --threads "$threads" --tokens 64 --sequences 1 \
                --repetitions 5 2>&1) || { echo "$out" >&2; exit 1; }
            dram_fraction=$(grep -m1 '^DRAM' <<<"$out" | sed 's/.*decode at \([0-9.]*%\).*/\1/')
            printf 'round %s %-9s T%s  vCPU round trip %-7s %6s tok/s  probe %5s GB/s %6s  DRAM %5s GB/s %6s\n' \
                "$round" "$quant" "$threads" "$where" "$(field decode "$out" 2)" "$(field roofline "$out" 3)" \
                "$(field 'fraction ' "$out" 2)" "$(field DRAM "$out" 3)" "$dram_fraction"
        done
    done
done
