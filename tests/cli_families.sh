#!/usr/bin/env bash
# Every method end to end: train on 8gaussians (300 steps, batch 256), sample with Heun, and check
# the samples' mean and spread against the data's (8gaussians: mean 0, per-coordinate std
# sqrt(8.25)/1.414 = 2.03). Also the refused method/flag combinations, each with one error line.
set -euo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_fam.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

check() { # name csv
  python3 - "$2" "$1" <<'PY' || fail "$1: samples are off the data"
import sys, csv, math
pts = [tuple(map(float, r)) for r in list(csv.reader(open(sys.argv[1])))[1:]]
n = len(pts)
m = [sum(p[k] for p in pts) / n for k in range(2)]
s = [math.sqrt(sum((p[k] - m[k]) ** 2 for p in pts) / n) for k in range(2)]
print("%-14s mean %+.3f %+.3f  std %.3f %.3f" % (sys.argv[2], m[0], m[1], s[0], s[1]))
assert all(abs(v) < 0.4 for v in m) and all(1.6 < v < 2.6 for v in s), (m, s)
PY
}

run() { # name, train flags...
  local name="$1"; shift
  "$BIN" train --data 8gaussians --steps 300 --batch 256 --threads 1 --samples 0 --out "$T/$name" "$@" 2>"$T/$name.log" \
    || { cat "$T/$name.log"; fail "train $name"; }
  "$BIN" sample --ckpt "$T/$name/model.safetensors" --sampler heun -n 2000 --seed 1 --threads 1 -o "$T/$name.csv" >/dev/null \
    || fail "sample $name"
  check "$name" "$T/$name.csv"
}

run fm --method fm
run fm-ot --method fm --ot
run edm --method edm
run vp --method vp
run subvp --method subvp
run ve --method ve
run ddpm --method ddpm
run ddpm-cos-v --method ddpm --ddpm-schedule cosine --pred v
run vp-x0 --method vp --pred x0
grep -q '"pred":"v"' "$T/ddpm-cos-v/config.json" || fail "config.json should record pred v"
grep -q '"ddpm_schedule":"cosine"' "$T/ddpm-cos-v/config.json" || fail "config.json should record the cosine schedule"
grep -q '"ot":true' "$T/fm-ot/config.json" || fail "config.json should record ot"

# Refused combinations: exit status 1 and exactly one error line naming the problem.
refuse() { # pattern, flags...
  local pat="$1"; shift
  if "$BIN" train --data 8gaussians --steps 2 --out "$T/refused" "$@" >"$T/out" 2>"$T/err"; then fail "accepted: $*"; fi
  [ "$(wc -l < "$T/err")" = 1 ] || { cat "$T/err"; fail "want one error line for: $*"; }
  grep -q "$pat" "$T/err" || { cat "$T/err"; fail "error for '$*' should mention $pat"; }
}
refuse "pred v" --method ve --pred v
refuse "pred v" --method subvp --pred v
refuse "ot" --method vp --ot
refuse "ot" --method fm --pred eps --ot
refuse "pred edm" --method fm --pred edm
refuse "ddpm-schedule" --method vp --ddpm-schedule cosine
refuse "unknown method" --method vpsde
refuse "unknown parameterization" --method vp --pred score
refuse "unknown DDPM schedule" --method ddpm --ddpm-schedule quadratic
echo "cli_families: ok"
