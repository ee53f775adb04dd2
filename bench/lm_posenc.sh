#!/usr/bin/env bash
# Length extrapolation of the byte-level LM per positional encoding (benchmark, not a test).
#
#   bench/lm_posenc.sh [BIN]          BIN defaults to build/difflow
#
# Trains `difflow lm train` once per positional encoding with the same budget (same model size,
# steps, batch, context, learning rate and seed) on the default corpus (Debian fortunes, or TEXT),
# then runs `difflow lm eval` on the validation split and prints one Markdown table: bits per byte
# at 1x, 2x, 4x and 8x the training context (non-overlapping windows, every byte scored once per
# length), plus zero-shot NTK and YaRN scaling of the rope model at eval time (factor = the length
# ratio, so each of those cells comes from its own eval run).
#
# Settings (environment): POSENCS, STEPS (600), CONTEXT (128), LAYERS (4), DIM (128), HEADS (4),
# BATCH (32), LR (1e-3), SEED (0), EVAL_BYTES (65536 bytes of the validation split; 0 = all),
# THREADS (0 = all cores), TEXT (empty = fortunes), OUT (runs/lm-bench). The defaults are the
# `difflow lm train` defaults (~5-10 min per encoding on 2 cores, so ~1.5 h in all). A short run
# (docs/LM.md):
#   STEPS=200 CONTEXT=64 LAYERS=2 DIM=64 HEADS=4 BATCH=16 LR=2e-3 EVAL_BYTES=16384 THREADS=1 bench/lm_posenc.sh
# Runs already in OUT/<posenc> with a model.safetensors are reused (delete OUT to retrain).
set -euo pipefail
BIN=${1:-build/difflow}
POSENCS=${POSENCS:-"none learned sinusoidal shaw t5 alibi rope rope-half rope-linear xpos"}
STEPS=${STEPS:-600}
CONTEXT=${CONTEXT:-128}
LAYERS=${LAYERS:-4}
DIM=${DIM:-128}
HEADS=${HEADS:-4}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
SEED=${SEED:-0}
EVAL_BYTES=${EVAL_BYTES:-65536}
THREADS=${THREADS:-0}
TEXT=${TEXT:-}
OUT=${OUT:-runs/lm-bench}
[ -x "$BIN" ] || { echo "bench/lm_posenc.sh: $BIN is not an executable (build first: tools/build.sh)" >&2; exit 2; }
TEXTARG=()
[ -n "$TEXT" ] && TEXTARG=(--text "$TEXT")
mkdir -p "$OUT"

# The value of the eval row for ratio R ("1x" ...), or n/a.
cell() { awk -v r="$2" '$2 == r { print ($3 == "n/a" ? "n/a" : $3) }' "$1"; }

declare -A secs
for pe in $POSENCS; do
  dir="$OUT/$pe"
  flags=(--posenc "$pe")
  [ "$pe" = rope-half ] && flags=(--posenc rope --rope-layout half)
  if [ ! -f "$dir/model.safetensors" ]; then
    t0=$(date +%s.%N)
    "$BIN" lm train "${TEXTARG[@]}" "${flags[@]}" --context "$CONTEXT" --layers "$LAYERS" --dim "$DIM" --heads "$HEADS" \
      --steps "$STEPS" --batch "$BATCH" --lr "$LR" --seed "$SEED" --threads "$THREADS" --out "$dir" 2>"$dir.train.log" \
      || { echo "training $pe failed: $(tail -1 "$dir.train.log")" >&2; continue; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", b - a }' >"$dir/train_seconds"
  fi
  secs[$pe]=$(cat "$dir/train_seconds" 2>/dev/null || echo "?")
  "$BIN" lm eval --ckpt "$dir/model.safetensors" "${TEXTARG[@]}" --bytes "$EVAL_BYTES" --threads "$THREADS" >"$dir/eval.txt" 2>/dev/null \
    || echo "eval $pe failed" >&2
  echo "$pe done" >&2
done
scaled=()
if [ -f "$OUT/rope/model.safetensors" ]; then
  for s in ntk yarn; do
    for f in 2 4 8; do
      "$BIN" lm eval --ckpt "$OUT/rope/model.safetensors" "${TEXTARG[@]}" --bytes "$EVAL_BYTES" --threads "$THREADS" \
        --rope-scaling "$s" --rope-factor "$f" >"$OUT/rope/eval_${s}_$f.txt" 2>/dev/null || echo "eval rope $s $f failed" >&2
    done
    scaled+=("$s")
  done
fi

echo
echo "Bits per byte on the validation split ($(head -1 "$OUT/$(echo $POSENCS | cut -d' ' -f1)/eval.txt" | sed 's/^# posenc [^;]*; //'))"
echo "Training: $STEPS steps x $BATCH windows of $CONTEXT bytes, $LAYERS layers, dim $DIM, $HEADS heads, lr $LR, seed $SEED."
echo
echo "| posenc | train s | $CONTEXT (1x) | $((2 * CONTEXT)) (2x) | $((4 * CONTEXT)) (4x) | $((8 * CONTEXT)) (8x) |"
echo "|---|---|---|---|---|---|"
for pe in $POSENCS; do
  f="$OUT/$pe/eval.txt"
  [ -f "$f" ] || continue
  echo "| $pe | ${secs[$pe]} | $(cell "$f" 1x) | $(cell "$f" 2x) | $(cell "$f" 4x) | $(cell "$f" 8x) |"
done
for s in "${scaled[@]}"; do
  echo "| rope + $s at eval (factor = ratio) | - | $(cell "$OUT/rope/eval.txt" 1x) | $(cell "$OUT/rope/eval_${s}_2.txt" 2x) |" \
       "$(cell "$OUT/rope/eval_${s}_4.txt" 4x) | $(cell "$OUT/rope/eval_${s}_8.txt" 8x) |"
done
