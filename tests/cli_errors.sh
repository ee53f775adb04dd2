#!/usr/bin/env bash
# Bad input: one clear "difflow: error:" line naming the file or flag, a non-zero exit, and
# nothing already saved damaged.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_err.XXXXXX)
trap 'chmod -R u+w "$T"; rm -rf "$T"' EXIT
nfail=0
source "$(dirname "$0")/lib.sh"

expect_error "unknown command" "frobnicate" -- "$BIN" frobnicate
expect_error "unknown flag" "--bogus" -- "$BIN" train --bogus 1
expect_error "bad int" "--steps" -- "$BIN" train --steps ten
expect_error "missing value" "--steps" -- "$BIN" train --steps
expect_error "unknown preset" "--preset" -- "$BIN" train --data moons --preset resnet-9000
expect_error "unknown method" "--method" -- "$BIN" train --method ddpm9
expect_error "unknown data" "--data" -- "$BIN" train --data imagenet
expect_error "preset vs data" "--preset" -- "$BIN" train --data moons --preset fmnist-unet-s
expect_error "zero steps" "--steps" -- "$BIN" train --data moons --steps 0 --out "$T/z"
expect_error "negative steps" "--steps" -- "$BIN" train --data moons --steps -5 --out "$T/z"
expect_error "negative batch" "--batch" -- "$BIN" train --data moons --batch -3 --out "$T/z"
expect_error "negative lr" "--lr" -- "$BIN" train --data moons --lr -2 --out "$T/z"
expect_error "negative warmup" "--warmup" -- "$BIN" train --data moons --warmup -1 --out "$T/z"
expect_error "zero log interval" "--log-every" -- "$BIN" train --data moons --log-every 0 --out "$T/z"
[ -e "$T/z" ] && { echo "FAIL a refused run created its directory"; nfail=$((nfail+1)); }
expect_error "missing dataset" "$T/nodata" -- "$BIN" train --data-dir "$T/nodata" --out "$T/nd"
mkdir -p "$T/trunc"
if [ -d /usr/share/datasets/fashion-mnist ]; then
  for f in /usr/share/datasets/fashion-mnist/*; do head -c 5000 "$f" > "$T/trunc/$(basename "$f")"; done
  expect_error "truncated dataset" "truncated\\|cut-off" -- "$BIN" train --data-dir "$T/trunc" --out "$T/tr"
fi
mkdir -p "$T/ro"; chmod a-w "$T/ro"
if [ "$(id -u)" != 0 ]; then
  expect_error "read-only out" "--out" -- "$BIN" train --data moons --steps 5 --out "$T/ro/run"
fi
expect_error "out is a file" "--out" -- "$BIN" train --data moons --steps 5 --out /dev/null/run

# A good run to damage.
"$BIN" train --data moons --steps 40 --batch 64 --samples 0 --out "$T/good" 2>/dev/null || { echo "FAIL good run"; exit 1; }
CK="$T/good/model.safetensors"
sum_before=$(sha256sum "$CK" "$T/good/train_state.safetensors")
expect_error "existing run" "--resume" -- "$BIN" train --data moons --steps 40 --out "$T/good"
expect_error "resume with another lr" "trained with --lr 0.001" -- "$BIN" train --data moons --steps 80 --lr 1e30 --resume --out "$T/good"
# NaN: one update at lr 1e30 wrecks the weights; they are checked (one no-grad loss, raw and EMA)
# before every save, so no checkpoint is written that eval would refuse.
expect_error "NaN weights are not saved" "after step 1; training stopped before any checkpoint was written" -- \
  "$BIN" train --data moons --steps 1 --lr 1e30 --samples 0 --out "$T/nan1"
[ -e "$T/nan1/model.safetensors" ] && { echo "FAIL lr 1e30 wrote a checkpoint"; nfail=$((nfail+1)); }
# A NaN in a resumed run keeps the last good checkpoint: a copy of the good run whose saved raw
# weights hold a NaN.
cp -r "$T/good" "$T/nan"
python3 - "$T/nan/train_state.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
k = next(k for k in h if k.startswith("param."))
lo = h[k]["data_offsets"][0]
b[8 + n + lo:8 + n + lo + 4] = struct.pack("<f", float("nan"))
open(sys.argv[1], "wb").write(b)
PY
nan_before=$(sha256sum "$T/nan/model.safetensors" "$T/nan/train_state.safetensors")
expect_error "NaN loss" "last good checkpoint" -- "$BIN" train --data moons --steps 80 --resume --out "$T/nan"
[ "$nan_before" = "$(sha256sum "$T/nan/model.safetensors" "$T/nan/train_state.safetensors")" ] || { echo "FAIL NaN loss damaged the checkpoint"; nfail=$((nfail+1)); }
[ "$sum_before" = "$(sha256sum "$CK" "$T/good/train_state.safetensors")" ] || { echo "FAIL NaN loss damaged the checkpoint"; nfail=$((nfail+1)); }
expect_error "resume other method" "trained as" -- "$BIN" train --data moons --method edm --steps 80 --resume --out "$T/good"

expect_error "no ckpt flag" "--ckpt" -- "$BIN" sample
expect_error "missing ckpt" "$T/none.safetensors" -- "$BIN" sample --ckpt "$T/none.safetensors"
head -c 100 "$CK" > "$T/trunc.safetensors"
expect_error "truncated ckpt" "trunc.safetensors" -- "$BIN" sample --ckpt "$T/trunc.safetensors"
printf 'garbage that is not a checkpoint at all......' > "$T/garbage.safetensors"
expect_error "garbage ckpt" "garbage.safetensors: not a safetensors file" -- "$BIN" info --ckpt "$T/garbage.safetensors"
# Another model's checkpoint: a toy-mlp's tensors under a config claiming fmnist-unet-s.
python3 - "$CK" "$T/other.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
cfg = json.loads(h["__metadata__"]["config"]); cfg["arch"] = "fmnist-unet-s"
h["__metadata__"]["config"] = json.dumps(cfg)
hj = json.dumps(h).encode(); hj += b" " * (-len(hj) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hj)) + hj + b[8 + n:])
PY
expect_error "other model ckpt" "another model" -- "$BIN" sample --ckpt "$T/other.safetensors"
expect_error "bad sampler" "--sampler" -- "$BIN" sample --ckpt "$CK" --sampler magic
expect_error "bad schedule" "--schedule" -- "$BIN" sample --ckpt "$CK" --schedule cosine
expect_error "zero sample steps" "--steps" -- "$BIN" sample --ckpt "$CK" --steps 0
expect_error "bad output dir" "/nonexistent_dir" -- "$BIN" sample --ckpt "$CK" -o /nonexistent_dir/x.csv
expect_error "bad output extension" "-o" -- "$BIN" sample --ckpt "$CK" -o "$T/x.txt"
expect_error "ckpt is a directory" "directory" -- "$BIN" sample --ckpt "$T"
expect_error "zero samples" "-n" -- "$BIN" sample --ckpt "$CK" -n 0
[ "$sum_before" = "$(sha256sum "$CK" "$T/good/train_state.safetensors")" ] || { echo "FAIL checkpoint changed"; nfail=$((nfail+1)); }
for c in train sample info bench; do "$BIN" $c --help >/dev/null || { echo "FAIL $c --help"; nfail=$((nfail+1)); }; done
# Exit status: 2 for an invalid command line (every command alike), 1 for a run that fails.
expect_rc "train bad value exits 2" 2 -- "$BIN" train --data moons --lr -2 --out "$T/z"
expect_rc "train unknown method exits 2" 2 -- "$BIN" train --method ddpm9 --out "$T/z"
expect_rc "train unknown flag exits 2" 2 -- "$BIN" train --bogus 1
expect_rc "sample bad value exits 2" 2 -- "$BIN" sample --ckpt "$T/none.safetensors" --steps 0
expect_rc "sample missing checkpoint exits 1" 1 -- "$BIN" sample --ckpt "$T/none.safetensors"
expect_rc "train missing dataset exits 1" 1 -- "$BIN" train --data-dir "$T/nodata" --out "$T/nd2"
expect_error "data-dir with 2-D data" "--data-dir" -- "$BIN" train --data moons --data-dir "$T" --out "$T/z"
[ -e "$T/z" ] && { echo "FAIL a refused run created its directory"; nfail=$((nfail+1)); }

echo "cli_errors: $nfail failed"
[ $nfail -eq 0 ]
