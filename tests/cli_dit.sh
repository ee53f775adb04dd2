#!/usr/bin/env bash
# The DiT backbone through the difflow program (--arch dit = fmnist-dit-s): flow matching and EDM
# training on Fashion-MNIST, info, sampling, a resumed run equal byte for byte to a straight one,
# and the preset refused for 2-D data. A few steps at small batch only (~20-40 s on 2 cores).
set -uo pipefail
BIN="$1"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
nfail=0
T=$(mktemp -d /tmp/dfl_dit.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; nfail=$((nfail+1)); }

c=(--samples 0 --warmup 1 --ema-halflife 2000 --batch 8 --threads 1)
"$BIN" train --arch dit --method fm "${c[@]}" --steps 3 --samples 4 --sample-steps 2 --out "$T/fm" 2>"$T/fm.log" \
  || { cat "$T/fm.log"; fail "train --arch dit --method fm"; }
for f in model.safetensors train_state.safetensors config.json log.csv samples.png; do
  [ -s "$T/fm/$f" ] || fail "missing $f"
done
"$BIN" info --ckpt "$T/fm/model.safetensors" > "$T/info.txt" || fail "info"
grep -q '^parameters: *4165456 ' "$T/info.txt" || { cat "$T/info.txt"; fail "info should report 4165456 parameters"; }
# Loss values are finite.
awk -F, 'NR > 1 && !($2 + 0 == $2 && $2 < 10) { bad = 1 } END { exit bad }' "$T/fm/log.csv" || fail "non-finite loss in log.csv"
"$BIN" sample --ckpt "$T/fm/model.safetensors" --sampler euler --steps 2 -n 4 --threads 1 -o "$T/s.png" 2>/dev/null \
  >/dev/null && [ -s "$T/s.png" ] || fail "sample from a DiT checkpoint"
"$BIN" train --preset fmnist-dit-s --method edm "${c[@]}" --steps 2 --out "$T/edm" 2>"$T/edm.log" \
  || { cat "$T/edm.log"; fail "train fmnist-dit-s --method edm"; }

# Interrupted and resumed equals straight, byte for byte.
"$BIN" train --arch dit "${c[@]}" --steps 4 --out "$T/straight" 2>/dev/null || fail "straight run"
"$BIN" train --arch dit "${c[@]}" --steps 2 --out "$T/split" 2>/dev/null || fail "first half"
"$BIN" train --arch dit "${c[@]}" --steps 4 --out "$T/split" --resume 2>/dev/null || fail "second half"
cmp -s "$T/straight/model.safetensors" "$T/split/model.safetensors" || fail "resumed DiT model differs from the straight run"
cmp -s "$T/straight/train_state.safetensors" "$T/split/train_state.safetensors" || fail "resumed DiT train state differs"

expect_error "dit on 2-D data" "does not fit data 'moons'" -- "$BIN" train --preset fmnist-dit-s --data moons --steps 2 --out "$T/bad"
expect_error "unknown preset" "fmnist-dit-s" -- "$BIN" train --preset dit-xl --steps 2 --out "$T/bad2"

[ $nfail -eq 0 ] || { echo "$nfail failure(s)"; exit 1; }
echo "cli_dit: all passed"
