#!/usr/bin/env bash
# Rectified-flow reflow (Liu, Gong, Liu 2023): a 1-rectified flow sampled with one Euler step
# collapses toward the data mean; the reflowed (2-rectified) flow, trained on the first flow's
# (sample, noise) pairs, lands on the data in one step. Data: 8 gaussians, whose centres lie at
# radius 4/1.414 = 2.83 with per-coordinate sd 0.5/1.414.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_rf.XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib.sh"
nfail=0
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" train --data 8gaussians --steps 1500 --lr 3e-3 --samples 0 --threads 1 --out "$T/base" 2>/dev/null || fail "train"
"$BIN" reflow --ckpt "$T/base/model.safetensors" --pairs 10000 --pair-steps 30 --steps 1000 --samples 0 --threads 1 2>"$T/rf.log" || { cat "$T/rf.log"; fail "reflow"; }
[ -f "$T/base-reflow/model.safetensors" ] || fail "reflow should write next to the base run (base-reflow/)"
radius() {  # mean distance from the origin of samples drawn with one Euler step
  "$BIN" sample --ckpt "$1" --sampler euler --schedule uniform --steps 1 -n 4000 --seed 1 -o "$T/s.csv" >/dev/null
  awk -F, 'NR > 1 { s += sqrt($1 * $1 + $2 * $2); n++ } END { printf "%.4f\n", s / n }' "$T/s.csv"
}
r1=$(radius "$T/base/model.safetensors")
r2=$(radius "$T/base-reflow/model.safetensors")
echo "one-step Euler: 1-RF mean radius $r1, 2-RF mean radius $r2 (data 2.83)"
awk -v r="$r1" 'BEGIN { exit !(r < 1.5) }' || fail "1-RF one-step samples should collapse toward the mean (radius $r1)"
awk -v r="$r2" 'BEGIN { exit !(r > 2.6 && r < 3.0) }' || fail "2-RF one-step samples should reach the data (radius $r2)"
# Same seed, same pairs, same model.
"$BIN" reflow --ckpt "$T/base/model.safetensors" --pairs 2000 --pair-steps 10 --steps 20 --samples 0 --threads 1 --out "$T/a" 2>/dev/null
"$BIN" reflow --ckpt "$T/base/model.safetensors" --pairs 2000 --pair-steps 10 --steps 20 --samples 0 --threads 1 --out "$T/b" 2>/dev/null
cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors" || fail "reflow is not reproducible"
"$BIN" train --data 8gaussians --method edm --steps 5 --samples 0 --out "$T/edm" 2>/dev/null
expect_error "reflow without ckpt" "--ckpt" -- "$BIN" reflow --steps 5
expect_error "reflow of an EDM model" "flow-matching" -- "$BIN" reflow --ckpt "$T/edm/model.safetensors" --out "$T/x"
expect_error "pairs without reflow" "--pairs" -- "$BIN" train --data moons --pairs 10 --out "$T/y"
expect_error "reflow with --method" "--method" -- "$BIN" reflow --ckpt "$T/base/model.safetensors" --method vp --out "$T/z"
expect_error "pairs beyond memory" "--pairs 2000000000 needs" -- "$BIN" reflow --ckpt "$T/base/model.safetensors" --pairs 2000000000 --out "$T/big"
expect_error "fewer pairs than a batch" "--pairs must be >= --batch" -- "$BIN" reflow --ckpt "$T/base/model.safetensors" --pairs 10 --out "$T/few"
[ -e "$T/big" ] || [ -e "$T/few" ] && fail "a refused reflow created its run directory"
echo "cli_reflow: $nfail failed"
[ $nfail -eq 0 ]
