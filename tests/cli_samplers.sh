#!/usr/bin/env bash
# difflow sample with every sampler and schedule: NFE printed as documented, and incompatible
# options refused before any work with one "difflow: error:" line naming the flag.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_smp.XXXXXX)
trap 'rm -rf "$T"' EXIT
nfail=0
source "$(dirname "$0")/lib.sh"
# expect_nfe NAME NFE -- command...: exit 0 and "NFE <NFE>," on stdout.
expect_nfe() {
  local name="$1" nfe="$2"; shift 3
  local out
  if ! out=$("$@" 2>&1); then echo "FAIL $name: $out"; nfail=$((nfail+1)); return; fi
  if ! grep -q "NFE $nfe," <<<"$out"; then echo "FAIL $name: expected NFE $nfe: $out"; nfail=$((nfail+1)); return; fi
  echo "ok   $name: NFE $nfe"
}

for method in fm edm; do
  "$BIN" train --data moons --method "$method" --steps 30 --batch 64 --samples 0 --out "$T/$method" 2>/dev/null \
    || { echo "FAIL train $method"; exit 1; }
  CK="$T/$method/model.safetensors"
  S=("$BIN" sample --ckpt "$CK" -n 50 --batch 20 -o "$T/s.csv")
  expect_nfe "$method euler" 6 -- "${S[@]}" --sampler euler --steps 6
  expect_nfe "$method heun" 11 -- "${S[@]}" --sampler heun --steps 6
  expect_nfe "$method dpmpp2m" 6 -- "${S[@]}" --sampler dpmpp2m --steps 6 --schedule loguniform
  expect_nfe "$method edm" 11 -- "${S[@]}" --sampler edm --steps 6 --churn 10 --s-tmin 0.05 --s-tmax 50 --s-noise 1.003
  expect_nfe "$method ddpm" 10 -- "${S[@]}" --sampler ddpm --steps 10 --schedule trailing
  expect_nfe "$method ddim" 10 -- "${S[@]}" --sampler ddim --steps 10 --eta 0.5 --schedule linspace
  expect_nfe "$method em" 8 -- "${S[@]}" --sampler em --steps 8
  expect_nfe "$method pc" 15 -- "${S[@]}" --sampler pc --steps 5 --snr 0.16 --corrector-steps 2
  expect_nfe "$method ald" 16 -- "${S[@]}" --sampler ald --steps 5 --corrector-steps 3
  expect_nfe "$method pc ancestral" 15 -- "${S[@]}" --sampler pc --steps 5 --predictor ancestral --corrector-steps 2
  expect_nfe "$method pc euler-maruyama" 15 -- "${S[@]}" --sampler pc --steps 5 --predictor euler-maruyama --corrector-steps 2
  expect_nfe "$method pc none" 11 -- "${S[@]}" --sampler pc --steps 5 --predictor none --corrector-steps 2
  expect_nfe "$method ddim leading offset" 10 -- "${S[@]}" --sampler ddim --steps 10 --schedule leading --steps-offset 1
  out=$("${S[@]}" --sampler rk45 --rtol 1e-3 --atol 1e-3 2>&1) && grep -q "NFE [0-9]" <<<"$out" \
    && echo "ok   $method rk45: $(grep -o 'NFE [0-9]*' <<<"$out")" || { echo "FAIL $method rk45: $out"; nfail=$((nfail+1)); }
  # Stochastic samplers are reproducible for a seed.
  "${S[@]}" --sampler ddpm --steps 10 --seed 4 -o "$T/a.csv" >/dev/null
  "${S[@]}" --sampler ddpm --steps 10 --seed 4 -o "$T/b.csv" >/dev/null
  cmp -s "$T/a.csv" "$T/b.csv" || { echo "FAIL $method ddpm not reproducible"; nfail=$((nfail+1)); }
done

CK="$T/fm/model.safetensors"
expect_error "eta without ddim" "--eta" -- "$BIN" sample --ckpt "$CK" --sampler heun --eta 0.5 -o "$T/s_refused.csv"
expect_error "churn without edm" "--churn" -- "$BIN" sample --ckpt "$CK" --sampler ddpm --churn 5
expect_error "s-noise without edm" "--s-noise" -- "$BIN" sample --ckpt "$CK" --s-noise 1.003
expect_error "snr without pc/ald" "--snr" -- "$BIN" sample --ckpt "$CK" --sampler em --snr 0.2
expect_error "corrector steps without pc/ald" "--corrector-steps" -- "$BIN" sample --ckpt "$CK" --corrector-steps 2
expect_error "rtol without rk45" "--rtol" -- "$BIN" sample --ckpt "$CK" --sampler heun --rtol 1e-4
expect_error "atol without rk45" "--atol" -- "$BIN" sample --ckpt "$CK" --sampler dpmpp2m --atol 1e-4
expect_error "rho without rho schedule" "--rho" -- "$BIN" sample --ckpt "$CK" --schedule uniform --rho 5
expect_error "zero steps" "--steps" -- "$BIN" sample --ckpt "$CK" --steps 0
expect_error "eta out of range" "eta" -- "$BIN" sample --ckpt "$CK" --sampler ddim --eta 2
expect_error "negative churn" "churn" -- "$BIN" sample --ckpt "$CK" --sampler edm --churn -1
expect_error "zero snr" "--snr" -- "$BIN" sample --ckpt "$CK" --sampler pc --snr 0
expect_error "zero rtol" "--rtol" -- "$BIN" sample --ckpt "$CK" --sampler rk45 --rtol 0
expect_error "spacing over T" "--steps" -- "$BIN" sample --ckpt "$CK" --schedule leading --steps 1001
expect_error "predictor without pc" "--predictor" -- "$BIN" sample --ckpt "$CK" --sampler em --predictor ancestral
expect_error "bad predictor" "--predictor" -- "$BIN" sample --ckpt "$CK" --sampler pc --predictor langevin
expect_error "max-nfe without rk45" "--max-nfe" -- "$BIN" sample --ckpt "$CK" --sampler heun --max-nfe 50
expect_error "zero max-nfe" "--max-nfe" -- "$BIN" sample --ckpt "$CK" --sampler rk45 --max-nfe 0
expect_error "rk45 over its NFE budget" "NFE\|evaluation" -- "$BIN" sample --ckpt "$CK" --sampler rk45 --rtol 1e-7 --atol 1e-7 --max-nfe 8
expect_error "steps-offset without leading" "--steps-offset" -- "$BIN" sample --ckpt "$CK" --schedule trailing --steps-offset 1
expect_error "steps-offset past T - 1" "(--steps-offset)" -- "$BIN" sample --ckpt "$CK" --sampler ddim --schedule leading --steps 1000 --steps-offset 1
expect_error "bad sampler" "--sampler" -- "$BIN" sample --ckpt "$CK" --sampler dpm++
expect_error "bad schedule" "--schedule" -- "$BIN" sample --ckpt "$CK" --schedule cosine
# FM's uniform grid starts at t = 1 where alpha = 0: the SDE samplers refuse it.
expect_error "em at alpha 0" "--schedule" -- "$BIN" sample --ckpt "$CK" --sampler em --schedule uniform
[ -e "$T/s_refused.csv" ] && { echo "FAIL a refused run wrote output"; nfail=$((nfail+1)); }
"$BIN" sample --help | grep -q "dpmpp2m" || { echo "FAIL help lists samplers"; nfail=$((nfail+1)); }

[ $nfail -eq 0 ] || { echo "$nfail failures"; exit 1; }
echo "all ok"
