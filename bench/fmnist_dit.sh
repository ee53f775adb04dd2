#!/usr/bin/env bash
# DiT against the U-Net on Fashion-MNIST (issue 5): trains fmnist-dit-s (--arch dit) and
# fmnist-unet-s with flow matching for the same number of steps and flags, then prints the
# training steps/s of each (from log.csv), the final loss, Heun samples (35 NFE) and the time
# to draw them. Writes OUT/{dit,unet}/ (checkpoints, samples.png) and OUT/results.md.
#
#   bench/fmnist_dit.sh                         # 600 steps per model (~30-40 min on 2 idle cores)
#   STEPS=20 SAMPLES=16 bench/fmnist_dit.sh     # smoke run
#   THREADS=1 bench/fmnist_dit.sh               # one core (steadier on a shared machine)
#   POSENC=sincos bench/fmnist_dit.sh           # the DiT's --posenc (rope2d default, sincos, none)
#
# Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/difflow}
STEPS=${STEPS:-600}
SAMPLES=${SAMPLES:-64}
THREADS=${THREADS:-0}
OUT=${OUT:-runs/bench-dit}
POSENC=${POSENC:-rope2d}
[ -x "$BIN" ] || tools/build.sh
mkdir -p "$OUT"
RES="$OUT/results.md"
{
  echo "# fmnist-dit-s (--posenc $POSENC) vs fmnist-unet-s, flow matching ($(date -u +%Y-%m-%d), $STEPS steps, batch 64, --threads $THREADS of $(nproc) cores)"
  echo
  echo "| preset | parameters | steps/s (mean over the run) | final loss (mean of last 10% of steps) | seconds for $SAMPLES samples (Heun, 35 NFE) | samples |"
  echo "|---|---|---|---|---|---|"
} > "$RES"
for p in fmnist-dit-s fmnist-unet-s; do
  d="$OUT/${p%-s}"; d="${d/fmnist-/}"
  rm -rf "$d"
  t0=$(date +%s.%N)
  pe=(); [ "$p" = fmnist-dit-s ] && pe=(--posenc "$POSENC")
  "$BIN" train --preset "$p" "${pe[@]}" --method fm --steps "$STEPS" --batch 64 --samples 0 --threads "$THREADS" --out "$d" 2>"$d.log" \
    || { cat "$d.log"; exit 1; }
  t1=$(date +%s.%N)
  line=$("$BIN" sample --ckpt "$d/model.safetensors" --sampler heun --steps 18 -n "$SAMPLES" --threads "$THREADS" -o "$d/samples.png")
  secs=$(sed -n 's/.*NFE [0-9]*, \([0-9.]*\) s.*/\1/p' <<<"$line")
  params=$("$BIN" info --ckpt "$d/model.safetensors" | sed -n 's/^parameters: *\([0-9]*\).*/\1/p')
  read -r rate loss < <(awk -F, -v n="$STEPS" 'NR > 1 { r += $5; k++; if ($1 > 0.9 * n) { l += $2; m++ } }
    END { printf "%.3f %.4f\n", r / k / 64, l / (m ? m : 1) }' "$d/log.csv")
  echo "| $p | $params | $rate | $loss | $secs | $d/samples.png |" >> "$RES"
  echo "$p: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s training"
done
cat "$RES"
