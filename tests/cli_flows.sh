#!/usr/bin/env bash
# Normalizing flows through the difflow program (issue 4), on 2-D data:
#  1. RealNVP and CNF (flow matching, PF-ODE likelihood) trained by `difflow train --method M` on two
#     moons and 8 gaussians reach a test log-likelihood (`difflow eval`, 2000 fresh draws) within
#     0.2 nats of the true-density bound E_p[log p] of reference/flows.md 3.4 (moons -2.3939,
#     8gaussians -2.8319), NICE within 0.5; none above bound + 3 SE.
#  2. A Glow run (ActNorm with data-dependent init) interrupted and resumed equals the uninterrupted
#     run byte for byte, so the ActNorm "initialised" flag travels with the checkpoint and init never
#     runs twice. (Save/reload giving bit-identical log p: tests/test_flow_checkpoint.c.)
#  3. sample --temperature (flows, and a CNF with a deterministic sampler): the same seed gives the
#     same file; a lower temperature a narrower cloud; a trained 2-D Glow is finite at T = 1; an
#     overflowing inverse is one error line that names --temperature and advises a lower one.
#  4. Bad input: one "difflow: error:" line naming the flag/file/layer, non-zero exit (2 for an
#     invalid command line), nothing overwritten; lr 1e30 writes no checkpoint (the weights are
#     checked before every save), a layer error (glow --lr 3) keeps a checkpoint that passes eval
#     and advises a lower --lr, the same line every run.
#  5. With Fashion-MNIST installed: image flows model x = v + u in [0, 256) (a dequantization layer
#     first), so eval's bits/dim = -log p / (D ln 2) exactly.
#
# Settings: the cheapest measured to pass with margin (2 shared cores, one --threads 1 job per core;
# CPU seconds train + eval, measured 2026-12-04 at commit 35f4d95, docs/FLOWS.md "Results: 2-D"):
#   method   data        steps  lr    log p (SE)        mean - bound   CPU s
#   realnvp  moons        400   3e-3  -2.4178 (0.016)   -0.024          1.3 + 0   (300 steps: -0.030)
#   realnvp  8gaussians   800   3e-3  -2.9492 (0.022)   -0.117          2.4 + 0   (500 steps: -0.143, at 1e-3: -0.178)
#   cnf      moons       1000   3e-3  -2.4711 (0.015)   -0.077          2.2 + 0.5 (600 steps: -0.167)
#   cnf      8gaussians  1200   3e-3  -2.9378 (0.020)   -0.106          2.8 + 0.8
#   nice     moons       1000   1e-3  -2.5710 (0.016)   -0.177          5.7 + 0   (2-D preset: 8 couplings of 3 x 128)
#   nice     8gaussians  1500   3e-3  -3.1113 (0.021)   -0.279          2.0 + 0   with --couplings 12 --hidden 64 --depth 2
#            (the preset, 1500 steps: -0.350 at 8.6 CPU s. Volume-preserving couplings and one global
#            scale need many layers to carve 8 separate modes.)
#   glow     moons        600   3e-3  -2.4189 (0.016)   -0.025          0.8 + 0   (not asserted; the resume check runs 120 steps)
# About 20 CPU seconds of training in all; the whole script took 16-23 s wall on the 2 cores at load
# average ~2.7 (two lanes), with the bad-input, NaN and lr-3 checks.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_flows.XXXXXX)
trap 'chmod -R u+w "$T"; rm -rf "$T"' EXIT
nfail=0
source "$(dirname "$0")/lib.sh"

# One likelihood job: train, evaluate, check. Writes its verdict to $T/NAME.res.
job() {
  local m="$1" d="$2" steps="$3" lr="$4" tol="$5" bound="$6"; shift 6
  local name="$m-$d" dir="$T/$m-$d"
  if ! "$BIN" train --method "$m" --data "$d" --steps "$steps" --lr "$lr" --threads 1 --samples 0 --out "$dir" "$@" \
         >/dev/null 2>"$dir.train.log"; then
    echo "FAIL $name: train failed: $(tail -n 3 "$dir.train.log")" >"$T/$name.res"; return
  fi
  local ode=()
  [ "$m" = cnf ] && ode=(--rtol 1e-4 --atol 1e-4)
  if ! "$BIN" eval --ckpt "$dir/model.safetensors" --metric nll -n 2000 "${ode[@]}" --threads 1 >"$dir.eval.txt" 2>&1; then
    echo "FAIL $name: eval failed: $(tail -n 3 "$dir.eval.txt")" >"$T/$name.res"; return
  fi
  local lp se
  read -r lp se < <(awk '/^log p \(nats\)/ {print $4, $5}' "$dir.eval.txt")
  if [ -z "${lp:-}" ]; then echo "FAIL $name: no log p line" >"$T/$name.res"; return; fi
  if python3 - "$lp" "$se" "$bound" "$tol" <<'PY'
import sys
lp, se, bound, tol = map(float, sys.argv[1:5])
assert 0 < se < 0.1, se
assert lp <= bound + 3 * se, (lp, bound, se)
assert lp >= bound - tol, (lp, bound)
PY
  then echo "ok   $name: log p $lp +- $se, bound $bound, tolerance $tol ($m steps $steps lr $lr $*)" >"$T/$name.res"
  else echo "FAIL $name: log p $lp +- $se not in [bound - $tol, bound + 3 SE], bound $bound ($m steps $steps lr $lr $*)" >"$T/$name.res"
  fi
}

MOONS=-2.3939 # FFJORD moons with continuous angles, quadrature (reference/flows.md 3.4)
G8=-2.8319    # FFJORD 8gaussians, quadrature
# method data steps lr tolerance bound [flags] -- the longest jobs first so the two lanes finish together.
JOBS=(
"cnf     8gaussians 1200 3e-3 0.2 $G8"
"cnf     moons      1000 3e-3 0.2 $MOONS"
"nice    8gaussians 1500 3e-3 0.5 $G8 --couplings 12 --hidden 64 --depth 2"
"nice    moons      1000 1e-3 0.5 $MOONS"
"realnvp 8gaussians  800 3e-3 0.2 $G8"
"realnvp moons       400 3e-3 0.2 $MOONS"
)
lane() {
  local k="$1" i=0
  for spec in "${JOBS[@]}"; do
    if [ $((i % 2)) -eq "$k" ]; then
      # shellcheck disable=SC2086
      job $spec
    fi
    i=$((i + 1))
  done
}
# Lane 1 also runs the Glow resume check (two short runs of the same 120 steps).
glow_resume() {
  local common=(--method glow --data moons --batch 256 --lr 1e-3 --warmup 5 --ema-halflife 5000 --seed 7 --threads 1 --samples 0)
  "$BIN" train "${common[@]}" --steps 120 --out "$T/glow-straight" 2>/dev/null &&
    "$BIN" train "${common[@]}" --steps 50 --out "$T/glow-split" 2>/dev/null &&
    "$BIN" train "${common[@]}" --steps 120 --out "$T/glow-split" --resume 2>/dev/null
  echo $? >"$T/glow.rc"
}
lane 0 & p0=$!
(lane 1; glow_resume) & p1=$!
wait "$p0" "$p1"

for spec in "${JOBS[@]}"; do
  read -r m d _ <<<"$spec"
  if [ -f "$T/$m-$d.res" ]; then cat "$T/$m-$d.res"; else echo "FAIL $m-$d: no result"; nfail=$((nfail + 1)); continue; fi
  grep -q '^FAIL' "$T/$m-$d.res" && nfail=$((nfail + 1))
done
check() { # NAME CONDITION-COMMAND...
  local name="$1"; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; nfail=$((nfail + 1)); fi
}
# expect_usage NAME PATTERN -- command...: expect_error, and the exit status is 2 (an invalid command
# line, README), not 1 (a run that failed).
expect_usage() {
  local name="$1" pat="$2"; shift 3
  expect_error "$name" "$pat" -- "$@"
  "$@" >/dev/null 2>&1
  local rc=$?
  [ "$rc" -eq 2 ] || { echo "FAIL $name: exit status $rc, not 2"; nfail=$((nfail + 1)); }
}

# 2. Resume. (That a saved and reloaded flow gives bit-identical log p is tests/test_flow_checkpoint.c.)
CK="$T/realnvp-moons/model.safetensors"
check "glow interrupted + resumed runs" test "$(cat "$T/glow.rc" 2>/dev/null)" = 0
check "glow resumed model equals the uninterrupted one" cmp -s "$T/glow-straight/model.safetensors" "$T/glow-split/model.safetensors"
check "glow resumed train state equals the uninterrupted one" cmp -s "$T/glow-straight/train_state.safetensors" "$T/glow-split/train_state.safetensors"
check "info: glow ActNorm initialised" grep -q 'actnorm initialised: yes' <("$BIN" info --ckpt "$T/glow-split/model.safetensors")
# A trained 2-D Glow samples finitely at T = 1 (reference/flows.md pitfall 7: its sigmoid scale
# has the 1e-3 floor): exit 0, 2000 rows of finite numbers.
"$BIN" sample --ckpt "$T/glow-straight/model.safetensors" -n 2000 --seed 3 --threads 1 -o "$T/glow-t1.csv" >/dev/null
check "trained 2-D glow samples 2000 finite points at T = 1" python3 - "$T/glow-t1.csv" <<'PY'
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
assert len(rows) == 2000, len(rows)
assert all(len(r) == 2 and all(math.isfinite(float(v)) for v in r) for r in rows)
PY
check "info: flow config" grep -q '^flow: *realnvp: ' <("$BIN" info --ckpt "$CK")
check "config.json: method realnvp" grep -q '"method":"realnvp"' "$T/realnvp-moons/config.json"
check "cnf checkpoint is method fm" grep -q '^method: *fm (pred velocity' <("$BIN" info --ckpt "$T/cnf-moons/model.safetensors")

# 3. Temperature.
"$BIN" sample --ckpt "$CK" -n 2000 --seed 5 --temperature 0.5 -o "$T/t05a.csv" >/dev/null
"$BIN" sample --ckpt "$CK" -n 2000 --seed 5 --temperature 0.5 -o "$T/t05b.csv" >/dev/null
"$BIN" sample --ckpt "$CK" -n 2000 --seed 5 -o "$T/t1.csv" >/dev/null
check "same seed and temperature: identical samples" cmp -s "$T/t05a.csv" "$T/t05b.csv"
check "temperature 0.5 draws a narrower cloud than 1 (total variance)" python3 - "$T/t05a.csv" "$T/t1.csv" <<'PY'
import sys, csv
def tv(p):
    pts = [tuple(map(float, r)) for r in list(csv.reader(open(p)))[1:]]
    n = len(pts); mx = sum(a for a, _ in pts) / n; my = sum(b for _, b in pts) / n
    return sum((a - mx) ** 2 + (b - my) ** 2 for a, b in pts) / n
v05, v1 = tv(sys.argv[1]), tv(sys.argv[2])
assert v05 < 0.8 * v1, (v05, v1)
PY

# CNF (flow matching) at temperature T: a deterministic sampler from x_T = T z.
CNF="$T/cnf-moons/model.safetensors"
"$BIN" sample --ckpt "$CNF" -n 500 --seed 5 --temperature 0.5 --threads 1 -o "$T/c05a.csv" >"$T/c05a.txt"
check "cnf: the sample line states the temperature" grep -q 'NFE [0-9]*, temperature 0.5, ' "$T/c05a.txt"
"$BIN" sample --ckpt "$CNF" -n 500 --seed 5 --temperature 0.5 --threads 1 -o "$T/c05b.csv" >/dev/null
"$BIN" sample --ckpt "$CNF" -n 500 --seed 5 --threads 1 -o "$T/c1.csv" >/dev/null
check "cnf: same seed and temperature: identical samples" cmp -s "$T/c05a.csv" "$T/c05b.csv"
check "cnf: temperature 0.5 draws a narrower cloud than 1" python3 - "$T/c05a.csv" "$T/c1.csv" <<'PY'
import sys, csv
def tv(p):
    pts = [tuple(map(float, r)) for r in list(csv.reader(open(p)))[1:]]
    n = len(pts); mx = sum(a for a, _ in pts) / n; my = sum(b for _, b in pts) / n
    return sum((a - mx) ** 2 + (b - my) ** 2 for a, b in pts) / n
v05, v1 = tv(sys.argv[1]), tv(sys.argv[2])
assert v05 < 0.8 * v1, (v05, v1)
PY

# An inverse that overflows at T = 1 (reference/flows.md pitfall 7): NICE's scaling layer set to
# log-scale -100, so its inverse multiplies by e^100 (inf in float32). sample stays strict (exit 1,
# nothing written) but names the flag and advises a lower temperature.
python3 - "$T/nice-moons/model.safetensors" "$T/overflow.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
lo, hi = h["nice.scaling.log_scale"]["data_offsets"]
b[8 + n + lo:8 + n + hi] = struct.pack("<%df" % ((hi - lo) // 4), *([-100.0] * ((hi - lo) // 4)))
open(sys.argv[2], "wb").write(b)
PY
expect_error "overflowing inverse: names --temperature and advises" \
  "sampling at --temperature 1: nice.scaling: output is not finite.*try --temperature 0.7 or train longer (--temperature)$" \
  -- "$BIN" sample --ckpt "$T/overflow.safetensors" -n 16 -o "$T/ovf.csv"
expect_error "overflowing inverse at T = 0.5 advises a lower one" "try --temperature 0.35 " \
  -- "$BIN" sample --ckpt "$T/overflow.safetensors" -n 16 --temperature 0.5 -o "$T/ovf.csv"
[ -e "$T/ovf.csv" ] && { echo "FAIL an overflowing sample wrote its output"; nfail=$((nfail+1)); }

# 4. Bad input.
sum_before=$(sha256sum "$CK" "$T/realnvp-moons/train_state.safetensors")
expect_error "flow flag with a diffusion method" "--width" -- "$BIN" train --method fm --data moons --width 64 --out "$T/z"
expect_error "flow flag with cnf" "--couplings" -- "$BIN" train --method cnf --data moons --couplings 4 --out "$T/z"
expect_error "diffusion flag with a flow" "--pred" -- "$BIN" train --method realnvp --data moons --pred eps --out "$T/z"
expect_error "sampler flag with a flow (train)" "--sample-steps" -- "$BIN" train --method glow --data moons --sample-steps 5 --out "$T/z"
expect_usage "flag the flow does not use" "--levels" -- "$BIN" train --method nice --data moons --levels 2 --out "$T/z"
expect_error "image-only flag on 2-D data" "--scales" -- "$BIN" train --method realnvp --data moons --scales 2 --out "$T/z"
expect_error "bad coupling" "--coupling" -- "$BIN" train --method glow --data moons --coupling spline --out "$T/z"
expect_usage "zero width" "--width" -- "$BIN" train --method realnvp --data moons --width 0 --out "$T/z"
expect_usage "bad --invconv (exit 2)" "--invconv" -- "$BIN" train --method glow --data moons --invconv qr --out "$T/z"
expect_error "cnf with eps prediction" "--pred" -- "$BIN" train --method cnf --data moons --pred eps --out "$T/z"
if [ -d /usr/share/datasets/fashion-mnist ]; then
  expect_usage "squeeze cannot divide 7" "squeeze" -- "$BIN" train --method glow --levels 3 --out "$T/z"
  expect_error "--logit-alpha with nice (no logit layer)" "--logit-alpha" -- "$BIN" train --method nice --logit-alpha 0.05 --out "$T/z"
  expect_usage "--learn-top 2" "--learn-top" -- "$BIN" train --method glow --learn-top 2 --out "$T/z"
  expect_error "--learn-top with realnvp" "--learn-top" -- "$BIN" train --method realnvp --learn-top 1 --out "$T/z"
  # 5. Images: the flow's first layer dequantizes x = v + u in [0, 256), so eval's bits/dim is
  #    -log p / (784 ln 2) with no constant (a 2-step Glow: about 6.5 bits/dim), and samples are
  #    written as images.
  if "$BIN" train --method glow --data fashion-mnist --steps 2 --width 16 --steps-per-level 2 --threads 1 \
       --samples 4 --out "$T/glow-img" >/dev/null 2>&1 \
     && "$BIN" eval --ckpt "$T/glow-img/model.safetensors" -n 8 --threads 1 > "$T/glow-img.eval" 2>&1; then
    lp=$(awk '/^log p/ {print $4}' "$T/glow-img.eval")
    bpd=$(awk '/^bits\/dim/ {print $(NF-1)}' "$T/glow-img.eval")
    python3 -c "import math,sys; lp,b=float(sys.argv[1]),float(sys.argv[2]); want=-lp/(784*math.log(2)); sys.exit(0 if abs(b-want)<1e-3 and 4<b<9 else 1)" "$lp" "$bpd" \
      || { echo "FAIL image flow bits/dim $bpd is not -log p/(D ln 2) for log p $lp"; nfail=$((nfail+1)); }
    [ -s "$T/glow-img/samples.png" ] || { echo "FAIL image flow wrote no samples.png"; nfail=$((nfail+1)); }
    check "image glow: split priors' log-sd bounded (info)" grep -q 'split log-sd bound 5' <("$BIN" info --ckpt "$T/glow-img/model.safetensors")
    "$BIN" sample --ckpt "$T/glow-img/model.safetensors" -n 16 --threads 1 -o "$T/glow-img-t1.png" >/dev/null
    check "image glow samples at T = 1" test -s "$T/glow-img-t1.png"
  else
    echo "FAIL 2-step Glow on fashion-mnist"; cat "$T/glow-img.eval" 2>/dev/null; nfail=$((nfail+1))
  fi
fi
[ -e "$T/z" ] && { echo "FAIL a refused run created its directory"; nfail=$((nfail+1)); }
expect_error "temperature 0" "--temperature" -- "$BIN" sample --ckpt "$CK" --temperature 0 -o "$T/x.csv"
expect_error "negative temperature" "--temperature" -- "$BIN" sample --ckpt "$CK" --temperature -1 -o "$T/x.csv"
expect_error "NaN temperature" "--temperature" -- "$BIN" sample --ckpt "$CK" --temperature nan -o "$T/x.csv"
expect_error "Inf temperature" "--temperature" -- "$BIN" sample --ckpt "$CK" --temperature inf -o "$T/x.csv"
expect_error "temperature with a stochastic sampler" "--temperature" -- "$BIN" sample --ckpt "$T/cnf-moons/model.safetensors" --temperature 0.5 --sampler ddpm -o "$T/x.csv"
expect_error "sampler flag with a flow checkpoint" "--sampler" -- "$BIN" sample --ckpt "$CK" --sampler euler -o "$T/x.csv"
expect_error "ODE flag with a flow checkpoint" "--rtol" -- "$BIN" eval --ckpt "$CK" --rtol 1e-3
[ -e "$T/x.csv" ] && { echo "FAIL a refused sample wrote its output"; nfail=$((nfail+1)); }
expect_error "resume with another flow" "trained as" -- "$BIN" train --method realnvp --data moons --width 32 --steps 500 --resume --out "$T/realnvp-moons"
expect_error "resume with another lr" "trained with --lr" -- "$BIN" train --method realnvp --data moons --steps 500 --lr 1e30 --resume --threads 1 --out "$T/realnvp-moons"
# Non-finite: one update at lr 1e30 wrecks the weights (the step's own loss, computed before the
# update, is finite). The weights about to be saved are checked first (one no-grad loss, raw and
# EMA), so no checkpoint is written that eval would refuse; any checkpoint kept must pass eval.
expect_error "lr 1e30: weights checked before the first save" \
  "the updated weights: realnvp.0.coupling: log-det is nan after step 1; training stopped before any checkpoint was written" \
  -- "$BIN" train --method realnvp --data moons --steps 1 --lr 1e30 --samples 0 --threads 1 --out "$T/nan"
[ -e "$T/nan/model.safetensors" ] && { echo "FAIL lr 1e30 wrote a checkpoint"; nfail=$((nfail+1)); }
for ck in "$T"/nan/model.safetensors; do
  [ -e "$ck" ] && check "a checkpoint kept after lr 1e30 passes eval" "$BIN" eval --ckpt "$ck" -n 100 --threads 1
done
# A layer error during training (lr 3: glow.0.invconv near-singular at step 12, the same every run)
# keeps the last good checkpoint (step 10 of --ckpt-every 5), which passes eval; --resume from it
# fails again at step 12 and leaves it unchanged.
G3=(--method glow --data moons --lr 3 --steps 200 --ckpt-every 5 --samples 0 --threads 1 --out "$T/lr3")
expect_error "layer error keeps the last good checkpoint" \
  "glow.0.invconv: 1x1 conv weight is singular or near-singular (.*) at step 12; training stopped, the last good checkpoint .* is kept (try a lower --lr)$" \
  -- "$BIN" train "${G3[@]}"
check "kept checkpoint is step 10" grep -q '^step: *10$' <("$BIN" info --ckpt "$T/lr3/model.safetensors")
"$BIN" eval --ckpt "$T/lr3/model.safetensors" -n 100 --threads 1 >"$T/lr3.eval" 2>&1
check "kept checkpoint passes eval" grep -q '^log p (nats) *-[0-9]' "$T/lr3.eval"
nan_before=$(sha256sum "$T/lr3/model.safetensors" "$T/lr3/train_state.safetensors")
expect_error "resumed layer error at the same step" "glow.0.invconv: .* at step 12; training stopped, the last good checkpoint" \
  -- "$BIN" train "${G3[@]}" --resume
[ "$nan_before" = "$(sha256sum "$T/lr3/model.safetensors" "$T/lr3/train_state.safetensors")" ] || { echo "FAIL a failing flow run changed its checkpoint"; nfail=$((nfail+1)); }
# The plain command (default --ckpt-every 50): the same layer error, before any checkpoint, with the
# advice; twice, the same line (the seed fixes every draw).
L3=(--method glow --data moons --lr 3 --steps 200 --threads 1 --samples 0)
expect_error "layer error during training advises a lower --lr" \
  "glow.0.invconv: 1x1 conv weight is singular or near-singular (.*) at step 12; training stopped before any checkpoint was written (try a lower --lr)$" \
  -- "$BIN" train "${L3[@]}" --out "$T/lr3b"
e1=$("$BIN" train "${L3[@]}" --out "$T/lr3c" 2>&1 >/dev/null | grep '^difflow: error:' | sed "s|$T/lr3c||")
e2=$("$BIN" train "${L3[@]}" --out "$T/lr3d" 2>&1 >/dev/null | grep '^difflow: error:' | sed "s|$T/lr3d||")
check "layer error is deterministic with the seed" test -n "$e1" -a "$e1" = "$e2"
[ "$sum_before" = "$(sha256sum "$CK" "$T/realnvp-moons/train_state.safetensors")" ] || { echo "FAIL a refused run changed the checkpoint"; nfail=$((nfail+1)); }
# Checkpoints of another model: a tensor renamed, and one with another shape.
python3 - "$CK" "$T/renamed.safetensors" "$T/reshaped.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
def write(path, hh):
    hj = json.dumps(hh).encode(); hj += b" " * (-len(hj) % 8)
    open(path, "wb").write(struct.pack("<Q", len(hj)) + hj + b[8 + n:])
names = [k for k in h if k != "__metadata__"]
r = dict(h); r["renamed.weight"] = r.pop(names[0]); write(sys.argv[2], r)
s = json.loads(json.dumps(h)); t = s[names[0]]
t["shape"] = [t["shape"][0] * t["shape"][1]] + t["shape"][2:] if len(t["shape"]) > 1 else [t["shape"][0], 1]
write(sys.argv[3], s)
PY
expect_error "renamed tensor" "another model" -- "$BIN" eval --ckpt "$T/renamed.safetensors"
expect_error "reshaped tensor" "different shape" -- "$BIN" sample --ckpt "$T/reshaped.safetensors" -o "$T/x.csv"

[ "$nfail" -eq 0 ] || { echo "cli_flows: $nfail failed" >&2; exit 1; }
echo "cli_flows: ok"
