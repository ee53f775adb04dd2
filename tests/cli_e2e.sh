#!/usr/bin/env bash
# End to end through the difflow program: train (2-D and images), resume, sample twice with the
# same seed (byte-identical), info, and the checkpoint opened by Python's safetensors package.
set -euo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 2-D flow matching on two moons.
"$BIN" train --data moons --steps 300 --batch 256 --out "$T/moons" --samples 500 2>"$T/train.log" || { cat "$T/train.log"; fail "train moons"; }
for f in model.safetensors train_state.safetensors config.json log.csv loss.png samples.csv samples.png; do
  [ -s "$T/moons/$f" ] || fail "missing $T/moons/$f"
done
[ "$(wc -l < "$T/moons/samples.csv")" = 501 ] || fail "samples.csv should hold a header and 500 points"
head -1 "$T/moons/log.csv" | grep -q '^step,loss,lr,grad_norm,samples_per_s$' || fail "log.csv header"
# The samples land near the moons, not at the origin: mean |y| of two moons data is ~0.5..1.
python3 - "$T/moons/samples.csv" <<'PY' || fail "moons samples are off the data"
import sys, csv, math
pts = [tuple(map(float, r)) for r in list(csv.reader(open(sys.argv[1])))[1:]]
mx = sum(p[0] for p in pts) / len(pts); my = sum(p[1] for p in pts) / len(pts)
sx = math.sqrt(sum((p[0]-mx)**2 for p in pts) / len(pts))
# Two moons as generated (x*2 + (-1,-0.2)): mean ~ (0, 0.3), std of x ~ 1.7.
assert abs(mx) < 0.4 and abs(my - 0.3) < 0.4 and 1.2 < sx < 2.2, (mx, my, sx)
PY

# Resume continues from the saved step.
"$BIN" train --data moons --steps 400 --batch 256 --out "$T/moons" --resume --samples 0 2>"$T/resume.log" || { cat "$T/resume.log"; fail "resume"; }
"$BIN" info --ckpt "$T/moons/model.safetensors" | grep -q '^step: *400$' || fail "info after resume should say step 400"

# An interrupted-and-resumed run equals an uninterrupted one, byte for byte (weights, Adam
# moments, EMA, RNG and data position are all restored).
common=(--data 8gaussians --batch 128 --warmup 5 --ema-halflife 2000 --log-every 10 --samples 0)
"$BIN" train "${common[@]}" --steps 60 --out "$T/straight" 2>/dev/null || fail "straight run"
"$BIN" train "${common[@]}" --steps 30 --out "$T/split" 2>/dev/null || fail "first half"
"$BIN" train "${common[@]}" --steps 60 --out "$T/split" --resume 2>/dev/null || fail "second half"
cmp -s "$T/straight/model.safetensors" "$T/split/model.safetensors" || fail "resumed model differs from the uninterrupted one"
cmp -s "$T/straight/train_state.safetensors" "$T/split/train_state.safetensors" || fail "resumed train state differs"
grep -q '"step":60' "$T/split/config.json" || fail "config.json should record step 60"

# Byte-identical samples for the same checkpoint and seed; different for another seed.
"$BIN" sample --ckpt "$T/moons/model.safetensors" -n 300 --seed 7 -o "$T/a.csv" >/dev/null
"$BIN" sample --ckpt "$T/moons/model.safetensors" -n 300 --seed 7 -o "$T/b.csv" >/dev/null
"$BIN" sample --ckpt "$T/moons/model.safetensors" -n 300 --seed 8 -o "$T/c.csv" >/dev/null
cmp -s "$T/a.csv" "$T/b.csv" || fail "same seed gave different samples"
cmp -s "$T/a.csv" "$T/c.csv" && fail "different seeds gave the same samples"
"$BIN" sample --ckpt "$T/moons/model.safetensors" --sampler euler --schedule uniform --steps 10 -n 10 -o "$T/e.csv" | grep -q 'NFE 10' || fail "euler NFE"
"$BIN" sample --ckpt "$T/moons/model.safetensors" --steps 18 -n 10 -o "$T/h.csv" | grep -q 'NFE 35' || fail "heun NFE"

# Images: a tiny fmnist-unet-s run (EDM), a PNG grid, byte-identical resampling.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  "$BIN" train --method edm --steps 2 --batch 8 --samples 4 --sample-steps 2 --out "$T/img" 2>"$T/img.log" || { cat "$T/img.log"; fail "train images"; }
  "$BIN" sample --ckpt "$T/img/model.safetensors" -n 4 --steps 2 --seed 3 -o "$T/g1.png" >/dev/null
  "$BIN" sample --ckpt "$T/img/model.safetensors" -n 4 --steps 2 --seed 3 -o "$T/g2.png" >/dev/null
  cmp -s "$T/g1.png" "$T/g2.png" || fail "same seed gave different image grids"
  # The reference reader opens our checkpoint; names and shapes are the torch module's.
  "${DFL_PYTHON:-python3}" - "$T/img/model.safetensors" "$(dirname "$0")/../bench/peers/unet_keys.txt" <<'PY' || fail "python safetensors check"
import sys, json
from safetensors import safe_open
want = [l.split() for l in open(sys.argv[2]) if l.strip()]
with safe_open(sys.argv[1], framework="numpy") as f:
    keys = set(f.keys())
    assert keys == {k for k, _ in want}, sorted(keys ^ {k for k, _ in want})[:5]
    for k, s in want:
        shape = "x".join(map(str, f.get_tensor(k).shape))
        assert shape == s, (k, shape, s)
    meta = f.metadata()
cfg = json.loads(meta["config"])
assert cfg["arch"] == "fmnist-unet-s" and cfg["method"] == "edm" and meta["step"] == "2", meta
PY
fi
echo "cli_e2e: ok"
