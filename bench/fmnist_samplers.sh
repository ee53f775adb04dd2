#!/usr/bin/env bash
# Fashion-MNIST sampler benchmark (issue 3): trains fmnist-unet-s with --method edm and
# --method vp, then for each model draws 64 samples with every relevant sampler at about
# 10, 20, 35, 100 and 1000 network evaluations (NFE), timing each, and reports bits/dim of test
# images through the PF-ODE. Writes OUT/grids/*.png and OUT/results.md.
#
#   bench/fmnist_samplers.sh                  # defaults: 720 training steps per model (~10 min each)
#   STEPS=3000 N_EVAL=32 bench/fmnist_samplers.sh
#   QUICK=1 STEPS=2 N_EVAL=1 bench/fmnist_samplers.sh   # smoke run: fewer NFE levels
#   THREADS=1 SAMPLES=25 bench/fmnist_samplers.sh          # one core, 5x5 grids (docs/SAMPLERS.md)
#
# Not a test: it takes about an hour on 2 cores with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/difflow}
STEPS=${STEPS:-720}
N_EVAL=${N_EVAL:-16}
OUT=${OUT:-runs/bench-samplers}
METHODS=${METHODS:-"edm vp"}
SAMPLES=${SAMPLES:-64}
THREADS=${THREADS:-0}
[ -x "$BIN" ] || tools/build.sh
mkdir -p "$OUT/grids"
RES="$OUT/results.md"
{
  echo "# Fashion-MNIST samplers ($(date -u +%Y-%m-%d), $STEPS training steps, $SAMPLES images per row below, --threads $THREADS of $(nproc) cores)"
  echo
  echo "| method | sampler | schedule | steps | NFE | seconds ($SAMPLES images) | grid |"
  echo "|---|---|---|---|---|---|---|"
} > "$RES"

# sampler:steps pairs giving NFE close to 10, 20, 35, 100, 1000 (Heun/EDM: 2N-1, others N).
if [ -n "${QUICK:-}" ]; then
  RUNS="heun:3 euler:5 dpmpp2m:5 ddim:5 ddpm:5 edm:3 em:5 rk45:0"
else
  RUNS="heun:6 heun:10 heun:18 heun:50 euler:10 euler:20 euler:35 euler:100 euler:1000
        dpmpp2m:10 dpmpp2m:20 dpmpp2m:35 dpmpp2m:100 ddim:10 ddim:20 ddim:35 ddim:100
        ddpm:100 ddpm:1000 edm:18 edm:50 em:1000 rk45:0"
fi

for m in $METHODS; do
  ck="$OUT/$m/model.safetensors"
  if [ ! -f "$ck" ]; then
    "$BIN" train --method "$m" --steps "$STEPS" --out "$OUT/$m" --samples 0 --threads "$THREADS"
  fi
  for r in $RUNS; do
    s=${r%%:*}; n=${r##*:}
    args=(--sampler "$s")
    case "$s" in
      rk45) args+=(--rtol 1e-3 --atol 1e-3) ;;
      edm) args+=(--steps "$n" --churn 40 --s-tmin 0.05 --s-tmax 50 --s-noise 1.003) ;;
      *) args+=(--steps "$n") ;;
    esac
    png="$OUT/grids/$m-$s-$n.png"
    line=$("$BIN" sample --ckpt "$ck" "${args[@]}" -n "$SAMPLES" --seed 0 --threads "$THREADS" -o "$png")
    nfe=$(sed -n 's/.*NFE \([0-9]*\).*/\1/p' <<<"$line")
    secs=$(sed -n 's/.*NFE [0-9]*, \([0-9.]*\) s.*/\1/p' <<<"$line")
    sched=$(sed -n 's/.*schedule \([a-z]*\).*/\1/p' <<<"$line")
    echo "| $m | $s | $sched | $n | $nfe | $secs | $(basename "$png") |" | tee -a "$RES"
  done
done

{
  echo
  echo "| method | test images | bits/dim (PF-ODE, Hutchinson, rtol = atol = 1e-3) |"
  echo "|---|---|---|"
} >> "$RES"
for m in $METHODS; do
  bpd=$("$BIN" eval --ckpt "$OUT/$m/model.safetensors" -n "$N_EVAL" --threads "$THREADS" --rtol 1e-3 --atol 1e-3 | awk '/bits\/dim/ {print $(NF-1), "+-", $NF}')
  echo "| $m | $N_EVAL | $bpd |" | tee -a "$RES"
done
echo "results: $RES"
