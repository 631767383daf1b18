#!/usr/bin/env python3
"""Compares a firmware's output (scripts/test-bare-metal.sh) with ../shared/golden.

The firmware prints each story between a header line
    == MODEL ENCODING KERNELS | PROMPT | STEPS | TEMPERATURE | TOP-P | SEED
and a line `== end`. Each story must equal the golden text of the case with the same settings
(f32: stories260K-generate.jsonl, q8_0: stories260K-q80-generate.jsonl) byte for byte, and the
output must contain the greedy "Once upon a time" case of every encoding it prints.
"""
import json
import sys

golden_dir, log = sys.argv[1], sys.argv[2]
files = {"f32": "stories260K-generate.jsonl", "q8_0": "stories260K-q80-generate.jsonl"}
golden = {}
for encoding, name in files.items():
    for line in open(f"{golden_dir}/{name}", encoding="utf-8"):
        case = json.loads(line)
        key = (encoding, case["prompt"], case["steps"], float(case["temperature"]), float(case["topp"]), case["seed"])
        golden[key] = case["text"]

output = open(log, encoding="utf-8", errors="replace").read()
failures, compared, greedy = [], 0, set()
sections = ("\n" + output).split("\n== ")[1:]
# Every story header is followed by an `== end` line; a missing one means the firmware stopped.
for header, following in zip(sections, sections[1:] + [""]):
    if "|" in header.partition("\n")[0] and not following.startswith("end"):
        failures.append(f"no end marker after {header.partition(chr(10))[0]!r} (the firmware stopped early)")
for section in ("\n" + output).split("\n== ")[1:]:
    header, _, rest = section.partition("\n")
    if header == "end":
        continue
    fields = [f.strip() for f in header.split("|")]
    if len(fields) != 6:
        failures.append(f"unreadable header: {header!r}")
        continue
    model, encoding, kernels = fields[0].split()
    key = (encoding, fields[1], int(fields[2]), float(fields[3]), float(fields[4]), int(fields[5]))
    text = rest
    want = golden.get(key)
    label = f"{model} {encoding} on {kernels}, prompt {fields[1]!r}, t={fields[3]}"
    if want is None:
        failures.append(f"{label}: no golden case with these settings")
    elif text != want:
        at = next((i for i, (a, b) in enumerate(zip(text, want)) if a != b), min(len(text), len(want)))
        failures.append(f"{label}: differs from the golden text at character {at}")
    else:
        compared += 1
        if key[1:] == ("Once upon a time", 256, 0.0, 0.9, 1):
            greedy.add(encoding)

encodings = {h[3:].split("|")[0].split()[1] for h in output.split("\n") if h.startswith("== ") and "|" in h}
for encoding in encodings - greedy:
    failures.append(f"{encoding}: the greedy 'Once upon a time' story is missing or wrong")
if compared == 0:
    failures.append("no story was printed")
# Instructions per position, where the firmware printed its timer (under -icount shift=0 one
# instruction is one nanosecond of the virtual clock).
headers = [h[3:] for h in output.split("\n") if h.startswith("== ") and "|" in h]
timers = [t for t in output.split("\n") if t.startswith("-- timer: ")]
for header, timer in zip(headers, timers):
    words = timer.split()
    positions, ticks, hz = int(words[2]), int(words[4]), int(words[7])
    instructions = ticks * 1e9 / hz
    print(f"   {header.split('|')[0].strip():40} {instructions / positions / 1e6:7.3f} M instructions per position")
for failure in failures:
    print(f"MISMATCH: {failure}", file=sys.stderr)
print(f"-- {log}: {compared} stories equal their golden text, {len(failures)} problems")
sys.exit(1 if failures else 0)
