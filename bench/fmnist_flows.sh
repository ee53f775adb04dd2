#!/usr/bin/env bash
# Fashion-MNIST normalizing-flow benchmark (issue 4): trains nice, realnvp, glow and cnf with
# `difflow train --method M --data fashion-mnist`, then prints each model's test bits/dim
# (`difflow eval --metric nll`, the first N_EVAL test images, dequantized with seed 0) and writes
# 8x8 sample grids at temperature 1 and 0.7. Writes OUT/M/ (runs), OUT/grids/*.png, OUT/results.md.
# nice, realnvp, glow: the exact log-likelihood (change of variables). cnf: flow matching with the
# fmnist-unet-s U-Net (velocity), its likelihood through the PF-ODE (RK45 at --cnf-tol, Hutchinson
# divergence with one probe): measured 2.4 s of CPU per image at 1e-5 in solves of 16 images (one
# thread; 10 minutes for 256), so it is evaluated on the first CNF_EVAL_N test images only
# (--cnf-eval-n, default 256); its samples use the default deterministic sampler (Heun) at the
# same temperatures.
#
#   bench/fmnist_flows.sh                       # all four, default budgets (about 10 min each on 2 cores)
#   bench/fmnist_flows.sh --steps 3000          # the same step count for every model
#   bench/fmnist_flows.sh --models "glow" --eval-n 10000
#   bench/fmnist_flows.sh --models cnf --cnf-eval-n 256 --cnf-tol 1e-5
#   bench/fmnist_flows.sh --models "nice cnf" --steps 2 --eval-n 20 --cnf-eval-n 2 --cnf-tol 1e-3 --out /tmp/flows-smoke
#
# Environment: BIN (default build/difflow), THREADS (0: all cores). The published MNIST-family
# figures next to which docs/FLOWS.md puts the results are in ../shared/reference/flows.md 4.
# Not a test: about 50 minutes on 2 cores with the defaults (cnf: 10 minutes of training plus
# CNF_EVAL_N times about 2.4 s).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/difflow}
THREADS=${THREADS:-0}
STEPS=""
MODELS="nice realnvp glow cnf"
N_EVAL=1000
CNF_EVAL_N=256
CNF_TOL=1e-5
OUT=runs/bench-flows
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --eval-n) N_EVAL="$2"; shift 2 ;;
    --cnf-eval-n) CNF_EVAL_N="$2"; shift 2 ;;
    --cnf-tol) CNF_TOL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "fmnist_flows.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || tools/build.sh
mkdir -p "$OUT/grids"
RES="$OUT/results.md"
{
  echo "# Fashion-MNIST normalizing flows ($(date -u +%Y-%m-%d), --threads $THREADS of $(nproc) cores, test bits/dim on the first $N_EVAL test images; cnf: first $CNF_EVAL_N, PF-ODE rtol = atol = $CNF_TOL)"
  echo
  echo "| model | configuration | parameters | steps | train s | test bits/dim | SE | grid (T = 1 / 0.7) |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$RES"

for m in $MODELS; do
  run="$OUT/$m"
  ck="$run/model.safetensors"
  secs="(existing)"
  if [ ! -f "$ck" ]; then
    args=(--method "$m" --data fashion-mnist --out "$run" --samples 0 --threads "$THREADS")
    [ -n "$STEPS" ] && args+=(--steps "$STEPS")
    t0=$(date +%s.%N)
    "$BIN" train "${args[@]}"
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$t0" "$(date +%s.%N)")
  fi
  if [ "$m" = cnf ]; then
    "$BIN" eval --ckpt "$ck" --metric nll -n "$CNF_EVAL_N" --rtol "$CNF_TOL" --atol "$CNF_TOL" --seed 0 --threads "$THREADS" | tee "$run/eval.txt"
  else
    "$BIN" eval --ckpt "$ck" --metric nll -n "$N_EVAL" --seed 0 --threads "$THREADS" | tee "$run/eval.txt"
  fi
  # An undertrained flow's inverse can overflow at T = 1 (reference/flows.md pitfall 7): noted, not fatal.
  grids=""
  for temp in 1 0.7; do
    if "$BIN" sample --ckpt "$ck" -n 64 --seed 0 --temperature "$temp" -o "$OUT/grids/$m-t$temp.png" --threads "$THREADS"; then
      grids="$grids grids/$m-t$temp.png"
    else
      grids="$grids (T = $temp: non-finite samples)"
    fi
  done
  read -r bpd se < <(awk '/^bits\/dim/ {print $(NF-1), $NF}' "$run/eval.txt")
  if [ "$m" = cnf ]; then
    cfg="$("$BIN" info --ckpt "$ck" | sed -n 's/^arch: *//p'), $("$BIN" info --ckpt "$ck" | sed -n 's/^method: *//p'), PF-ODE likelihood on $CNF_EVAL_N images (rtol = atol = $CNF_TOL)"
  else
    cfg=$("$BIN" info --ckpt "$ck" | sed -n 's/^flow: *//p')
  fi
  params=$("$BIN" info --ckpt "$ck" | sed -n 's/^parameters: *\([0-9]*\).*/\1/p')
  step=$("$BIN" info --ckpt "$ck" | sed -n 's/^step: *//p')
  echo "| $m | $cfg | $params | $step | $secs | $bpd | $se |$grids |" >> "$RES"
done
echo
cat "$RES"
