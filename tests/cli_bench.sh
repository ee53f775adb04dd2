#!/usr/bin/env bash
# difflow bench: GFLOP/s = samples/s x the analytic FLOPs per sample (training 3 x forward,
# sampling NFE x forward), the fraction of a given sgemm peak, and bad flags refused.
set -uo pipefail
BIN="$1"
nfail=0
source "$(dirname "$0")/lib.sh"
export GOMP_SPINCOUNT=1000

# check_json NAME RATEKEY FLOPSKEY MULT -- command...: gflops == rate * flops * MULT * 1e-9 (to the
# printed precision) and fraction_of_peak == gflops / 100.
check_json() {
  local name="$1" rk="$2" fk="$3" mult="$4"; shift 5
  local out
  if ! out=$("$@" 2>&1); then echo "FAIL $name: $out"; nfail=$((nfail+1)); return; fi
  if python3 - "$rk" "$fk" "$mult" "$out" <<'PY'; then echo "ok   $name"; else echo "FAIL $name: $out"; nfail=$((nfail+1)); fi
import json, sys
rk, fk, mult, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
m = r["nfe"] if mult == "nfe" else float(mult)
g = r[rk] * r[fk] * m * 1e-9
assert abs(r["gflops"] - g) <= 0.01 + 1e-3 * g, (r["gflops"], g)
assert abs(r["fraction_of_peak"] - r["gflops"] / 100) <= 1e-3, r
assert r["peak_gflops"] == 100
PY
}

# toy-mlp: 3 x 264,704 FLOPs per training sample (tests/test_flops.c checks the count itself).
check_json "train gflops" samples_per_s train_flops_per_sample 1 -- \
  "$BIN" bench --preset toy-mlp --steps 5 --warmup 1 --batch 64 --threads 1 --peak-gflops 100 --json
out=$("$BIN" bench --preset toy-mlp --steps 5 --warmup 1 --batch 64 --threads 1 --json)
grep -q '"train_flops_per_sample":794112,' <<<"$out" && echo "ok   toy-mlp 794112 FLOPs per sample" \
  || { echo "FAIL toy-mlp FLOPs: $out"; nfail=$((nfail+1)); }
grep -q 'peak_gflops' <<<"$out" && { echo "FAIL no peak given but fraction printed: $out"; nfail=$((nfail+1)); }
check_json "sample gflops" images_per_s fwd_flops_per_sample nfe -- \
  "$BIN" bench --preset toy-mlp --sample --batch 32 --threads 1 --peak-gflops 100 --json
out=$("$BIN" bench --preset toy-mlp --steps 3 --warmup 0 --batch 32 --threads 1 --peak-gflops 50)
grep -q "GFLOP/s, [0-9.]*% of the 50.0 GFLOP/s sgemm peak" <<<"$out" && echo "ok   text line" \
  || { echo "FAIL text line: $out"; nfail=$((nfail+1)); }

expect_error "negative peak" "--peak-gflops must be >= 0" -- "$BIN" bench --peak-gflops -1
expect_error "bad peak" "--peak-gflops" -- "$BIN" bench --peak-gflops abc

[ $nfail -eq 0 ] || { echo "$nfail failures"; exit 1; }
echo "all ok"
