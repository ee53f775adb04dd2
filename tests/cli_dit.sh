#!/usr/bin/env bash
# The DiT backbone through the difflow program (--arch dit = fmnist-dit-s): training on
# Fashion-MNIST with every diffusion / flow-matching method (fm, edm, vp, subvp, ve, ddpm), each
# sampled with a sampler valid for it (NFE checked) and its ODE log-likelihood finite; every
# --posenc (rope2d, sincos, none) recorded in config.json and the checkpoint and restored by info and
# sample; a resumed run equal byte for byte to a straight one; the refusals of --posenc and of the
# preset on 2-D data. A few steps at small batch only (~30-60 s on 2 cores).
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

# Every method: 2 steps, then a sampler valid for it with its NFE for 3 steps (euler N, heun 2N-1,
# ddim N, em N, pc N (corrector steps + 1), ddpm N), then the PF-ODE bits/dim of one test image,
# which must be a finite number (loose tolerances keep the solve short).
samplers=(fm:euler:3 edm:heun:5 vp:ddim:3 subvp:em:3 ve:pc:6 ddpm:ddpm:3)
for ms in "${samplers[@]}"; do
  IFS=: read -r m smp nfe <<<"$ms"
  "$BIN" train --arch dit --method "$m" "${c[@]}" --steps 2 --out "$T/m-$m" 2>"$T/m-$m.log" \
    || { cat "$T/m-$m.log"; fail "train --arch dit --method $m"; continue; }
  awk -F, 'NR > 1 && !($2 + 0 == $2 && $2 < 1e6) { bad = 1 } END { exit bad }' "$T/m-$m/log.csv" \
    || fail "$m: non-finite loss in log.csv"
  line=$("$BIN" sample --ckpt "$T/m-$m/model.safetensors" --sampler "$smp" --steps 3 -n 4 --threads 1 -o "$T/m-$m.png" 2>&1) \
    || { echo "$line"; fail "$m: sample --sampler $smp"; continue; }
  [ -s "$T/m-$m.png" ] || fail "$m: no image from --sampler $smp"
  grep -q "sampler $smp, .*NFE $nfe," <<<"$line" || fail "$m: --sampler $smp with 3 steps should report NFE $nfe: $line"
  bpd=$("$BIN" eval --ckpt "$T/m-$m/model.safetensors" -n 1 --rtol 1e-2 --atol 1e-2 --threads 1 2>/dev/null \
        | sed -n 's/^bits\/dim (8-bit, +7) *\([^ ]*\) .*/\1/p')
  awk -v v="$bpd" 'BEGIN { exit !(v != "" && v + 0 == v && v > 0 && v < 1e4) }' \
    || fail "$m: eval should print a finite bits/dim, got '$bpd'"
  echo "ok   --method $m: sampler $smp NFE $nfe, bits/dim $bpd"
done

# Every --posenc: recorded in config.json and in the checkpoint, restored by info and sample.
for pe in rope2d sincos none; do
  "$BIN" train --arch dit --posenc "$pe" "${c[@]}" --steps 2 --out "$T/pe-$pe" 2>"$T/pe-$pe.log" \
    || { cat "$T/pe-$pe.log"; fail "train --posenc $pe"; continue; }
  grep -q "posenc $pe with fm" "$T/pe-$pe.log" || fail "train --posenc $pe: the start line should name the encoding"
  grep -q "\"posenc\":\"$pe\"" "$T/pe-$pe/config.json" || fail "config.json should record posenc $pe"
  "$BIN" info --ckpt "$T/pe-$pe/model.safetensors" > "$T/pe-$pe.info" || fail "info --posenc $pe"
  grep -q "^posenc: *$pe\b" "$T/pe-$pe.info" || { cat "$T/pe-$pe.info"; fail "info should show posenc $pe"; }
  grep -q '^parameters: *4165456 ' "$T/pe-$pe.info" || fail "posenc $pe: 4165456 parameters (no position parameters)"
  "$BIN" sample --ckpt "$T/pe-$pe/model.safetensors" --sampler euler --steps 2 -n 4 --seed 3 --threads 1 \
    -o "$T/pe-$pe.png" >/dev/null 2>&1 || fail "sample from a --posenc $pe checkpoint"
done
grep -q '"rope_theta":100' "$T/pe-rope2d/config.json" || fail "config.json should record rope_theta 100 for rope2d"
# The encoding is restored on load: the sincos checkpoint with only its config's posenc edited to
# none (same weights) samples other images, and the unedited copy samples the same ones again.
set_posenc() { # src dst posenc: rewrite __metadata__.config.posenc of a safetensors file
  python3 - "$@" <<'PY'
import json, struct, sys
src, dst, pe = sys.argv[1:4]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
cfg = json.loads(h["__metadata__"]["config"])
cfg["posenc"] = pe
h["__metadata__"]["config"] = json.dumps(cfg)
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
}
set_posenc "$T/pe-sincos/model.safetensors" "$T/as-none.safetensors" none || fail "editing the config"
set_posenc "$T/pe-sincos/model.safetensors" "$T/as-sincos.safetensors" sincos || fail "editing the config"
"$BIN" info --ckpt "$T/as-none.safetensors" | grep -q '^posenc: *none' || fail "edited checkpoint: info should show none"
for v in none sincos; do
  "$BIN" sample --ckpt "$T/as-$v.safetensors" --sampler euler --steps 2 -n 4 --seed 3 --threads 1 -o "$T/as-$v.png" \
    >/dev/null 2>&1 || fail "sample from the edited checkpoint ($v)"
done
cmp -s "$T/as-sincos.png" "$T/pe-sincos.png" || fail "the rewritten sincos checkpoint should sample the same images"
cmp -s "$T/as-none.png" "$T/pe-sincos.png" && fail "posenc none on the sincos weights sampled the same images: posenc not restored"
set_posenc "$T/pe-sincos/model.safetensors" "$T/as-bogus.safetensors" rope || fail "editing the config"
expect_error "checkpoint with an unknown posenc" "unknown DiT posenc 'rope'" -- "$BIN" info --ckpt "$T/as-bogus.safetensors"
# The default is rope2d.
grep -q '"posenc":"rope2d"' "$T/fm/config.json" || fail "--arch dit without --posenc should record rope2d"
expect_error "resume with another posenc" "trained with --posenc sincos, not rope2d" -- \
  "$BIN" train --arch dit --posenc rope2d "${c[@]}" --steps 4 --out "$T/pe-sincos" --resume
"$BIN" train --arch dit --posenc sincos "${c[@]}" --steps 3 --out "$T/pe-sincos" --resume 2>/dev/null \
  || fail "resume with the same --posenc"
"$BIN" train --steps 4 --threads 1 --samples 0 --out "$T/pe-sincos" --resume 2>"$T/pe-resume.log" \
  || fail "resume without --arch/--posenc (taken from the run's config.json): $(tail -n 1 "$T/pe-resume.log")"
grep -q "posenc sincos" "$T/pe-resume.log" || fail "resume without --posenc did not continue the sincos DiT: $(head -n 1 "$T/pe-resume.log")"
# reflow keeps the teacher's encoding (the student starts from its weights) and refuses --posenc.
"$BIN" reflow --ckpt "$T/pe-sincos/model.safetensors" --pairs 8 --batch 8 --steps 1 --pair-steps 2 --samples 0 \
  --threads 1 --out "$T/reflow" 2>/dev/null || fail "reflow from a sincos DiT"
grep -q '"posenc":"sincos"' "$T/reflow/config.json" || fail "reflow should keep the teacher's posenc sincos"
expect_error "posenc with reflow" "drop --data/--method/--pred/--posenc" -- \
  "$BIN" reflow --ckpt "$T/pe-sincos/model.safetensors" --posenc none --out "$T/bad6"
expect_error "posenc on the U-Net" "--posenc applies to --arch dit" -- \
  "$BIN" train --arch fmnist-unet-s --posenc sincos --steps 2 --out "$T/bad3"
expect_error "posenc on a flow" "(--posenc)" -- "$BIN" train --method glow --posenc none --steps 2 --out "$T/bad4"
expect_error "unknown posenc" "unknown DiT positional encoding 'rope' (known: rope2d, sincos, none) (--posenc)" -- \
  "$BIN" train --arch dit --posenc rope --steps 2 --out "$T/bad5"

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
