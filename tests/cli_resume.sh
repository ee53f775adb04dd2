#!/usr/bin/env bash
# train --resume keeps the run's hyper-parameters (lr, batch, clip, ema-halflife, warmup saved in
# train_state.safetensors): flags left out take the saved values, a different value is refused
# with one error line and nothing saved changes. Checkpoints of other kinds (language model,
# normalizing flow, a training state) given where a diffusion/FM model is expected are named as
# what they are.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_resume.XXXXXX)
trap 'rm -rf "$T"' EXIT
nfail=0
source "$(dirname "$0")/lib.sh"
fail() { echo "FAIL $*"; nfail=$((nfail+1)); }

# --warmup 60 spans the split, so the lr column at steps 45..60 tests the warmup continuing too.
c=(--data moons --method fm --lr 3e-3 --batch 128 --warmup 60 --threads 1 --samples 0 --log-every 5 --ckpt-every 20)
"$BIN" train "${c[@]}" --steps 80 --out "$T/ref" 2>/dev/null || fail "reference run"
"$BIN" train "${c[@]}" --steps 40 --out "$T/split" 2>/dev/null || fail "first half"
sums=$(md5sum "$T/split/model.safetensors" "$T/split/train_state.safetensors" "$T/split/log.csv" "$T/split/config.json")
r=(train --data moons --method fm --threads 1 --samples 0 --log-every 5 --steps 80 --resume --out "$T/split")
expect_error "resume with another --lr" "the run was trained with --lr 0.003; drop --lr" -- "$BIN" "${r[@]}" --lr 1e-3
expect_error "resume with another --batch" "the run was trained with --batch 128; drop --batch" -- "$BIN" "${r[@]}" --batch 64
expect_error "resume with another --warmup" "the run was trained with --warmup 60" -- "$BIN" "${r[@]}" --warmup 4
expect_error "resume with another --clip" "the run was trained with --clip 1" -- "$BIN" "${r[@]}" --clip 0.5
[ "$sums" = "$(md5sum "$T/split/model.safetensors" "$T/split/train_state.safetensors" "$T/split/log.csv" "$T/split/config.json")" ] \
  || fail "a refused --resume changed the run"
# no flags: the saved lr, batch and warmup (not the defaults 1e-3, 512, steps/20)
"$BIN" "${r[@]}" 2>"$T/resume.log" || fail "resume without flags: $(tail -1 "$T/resume.log")"
grep -q "steps of batch 128, lr 0.003," "$T/resume.log" || fail "resume: not batch 128, lr 0.003: $(grep training "$T/resume.log")"
[ "$(cut -d, -f1,3 "$T/split/log.csv")" = "$(cut -d, -f1,3 "$T/ref/log.csv")" ] \
  || fail "resumed lr column differs from the uninterrupted run: $(paste -d' ' "$T/split/log.csv" "$T/ref/log.csv" | cut -c1-80)"
[ "$(grep -c '^[0-9]' "$T/split/log.csv")" -eq 16 ] || fail "resumed log.csv has $(grep -c '^[0-9]' "$T/split/log.csv") rows, expected 16"
grep -q '^60,[^,]*,0.003,' "$T/split/log.csv" && grep -q '^45,[^,]*,0.00225,' "$T/split/log.csv" \
  || fail "lr at steps 45/60 is not 3e-3 * 45/60, 3e-3: $(grep -E '^(45|60),' "$T/split/log.csv")"
# the same value passed again is accepted
"$BIN" train --data moons --method fm --threads 1 --samples 0 --steps 84 --resume --lr 3e-3 --batch 128 --out "$T/split" 2>/dev/null \
  || fail "resume with the same --lr/--batch refused"
echo "ok   resume keeps lr/batch/warmup; other values refused"
# --out and --resume alone: data, method and preset come from the run's config.json
"$BIN" train --threads 1 --samples 0 --steps 88 --resume --out "$T/split" 2>"$T/bare.log" \
  || fail "resume with --out only: $(tail -n 1 "$T/bare.log")"
grep -q "toy-mlp with fm (pred velocity) on moons" "$T/bare.log" || fail "resume with --out only: $(head -n 1 "$T/bare.log")"
grep -q "resuming at step 84 of 88" "$T/bare.log" || fail "resume banner: $(grep resuming "$T/bare.log")"
expect_rc "run directory holds a model" 2 -- "$BIN" train --data moons --threads 1 --samples 0 --steps 90 --out "$T/split"
expect_rc "resume with other data" 2 -- "$BIN" train --data 8gaussians --threads 1 --samples 0 --steps 90 --resume --out "$T/split"
expect_rc "resume with another lr" 2 -- "$BIN" train --threads 1 --samples 0 --steps 90 --resume --lr 1 --out "$T/split"

# Other checkpoint kinds where a diffusion / flow-matching model is expected.
python3 - "$T/text.txt" <<'PY'
import sys, random
r = random.Random(5)
w = "the quick brown fox jumps over a lazy dog".split()
open(sys.argv[1], "w").write("".join(" ".join(r.choice(w) for _ in range(8)) + ".\n" for _ in range(300)))
PY
"$BIN" lm train --text "$T/text.txt" --context 16 --layers 1 --dim 16 --heads 2 --batch 8 --threads 1 --val-bytes 512 \
  --steps 2 --out "$T/lm" 2>/dev/null || fail "lm train"
"$BIN" train --data moons --method realnvp --steps 2 --threads 1 --samples 0 --out "$T/nf" 2>/dev/null || fail "realnvp train"
LM="$T/lm/model.safetensors" NF="$T/nf/model.safetensors"
for c in sample info eval; do
  expect_error "$c lm ckpt" "$LM: a difflow language-model checkpoint; use difflow lm generate|eval" -- "$BIN" $c --ckpt "$LM"
done
expect_error "reflow lm ckpt" "$LM: a difflow language-model checkpoint" -- "$BIN" reflow --ckpt "$LM" --steps 2 --out "$T/rf1"
expect_error "reflow flow ckpt" "$NF: a normalizing-flow checkpoint (realnvp), not a diffusion/flow-matching model" \
  -- "$BIN" reflow --ckpt "$NF" --steps 2 --out "$T/rf2"
expect_error "resume fm on a flow run" "$NF: a normalizing-flow checkpoint (realnvp)" \
  -- "$BIN" train --data moons --method fm --steps 5 --resume --out "$T/nf"
cp -r "$T/lm" "$T/lmrun"
expect_error "resume fm on an lm run" "a difflow language-model checkpoint" \
  -- "$BIN" train --data moons --method fm --steps 5 --resume --out "$T/lmrun"
expect_error "train state as ckpt" "not a difflow checkpoint (format 'difflow-lm-train-state')" \
  -- "$BIN" sample --ckpt "$T/lm/train_state.safetensors"
expect_error "bare resume on an lm run" "a difflow language-model checkpoint" -- "$BIN" train --resume --out "$T/lmrun"

# The run's length and thread count come back with --resume: a finished run is not trained on
# to the default 4000 steps, and --steps extends it.
"$BIN" train --data moons --steps 30 --threads 1 --samples 0 --out "$T/len" 2>/dev/null || fail "30-step run"
expect_error "bare resume of a finished run" "already at step 30 >= --steps 30" -- "$BIN" train --resume --out "$T/len"
"$BIN" train --resume --steps 40 --samples 0 --out "$T/len" 2>"$T/len.log" || fail "resume --steps 40: $(tail -n 1 "$T/len.log")"
grep -q "1 thread -> " "$T/len.log" || fail "resume did not keep --threads 1: $(grep training "$T/len.log")"

# A reflow run resumed with train --out DIR --resume stays a reflow (same teacher, pairs and
# pair steps), equal byte for byte to a straight reflow.
rf=(--pairs 600 --pair-steps 4 --warmup 0 --ema-halflife 0 --threads 1 --samples 0)
"$BIN" reflow --ckpt "$T/ref/model.safetensors" "${rf[@]}" --steps 30 --out "$T/rf-straight" 2>/dev/null || fail "straight reflow"
"$BIN" reflow --ckpt "$T/ref/model.safetensors" "${rf[@]}" --steps 20 --out "$T/rf-split" 2>/dev/null || fail "first reflow half"
"$BIN" train --resume --steps 30 --out "$T/rf-split" 2>"$T/rf.log" || fail "reflow resume: $(tail -n 1 "$T/rf.log")"
grep -q "reflow pairs from" "$T/rf.log" || fail "train --resume of a reflow run did not regenerate its pairs: $(head -n 2 "$T/rf.log")"
cmp -s "$T/rf-straight/model.safetensors" "$T/rf-split/model.safetensors" || fail "resumed reflow differs from the straight one"

# One training per run directory.
"$BIN" train --data moons --steps 200000 --threads 1 --samples 0 --out "$T/busy" 2>/dev/null & bpid=$!
for i in $(seq 1 50); do [ -e "$T/busy/train_state.safetensors" ] || [ -e "$T/busy/log.csv" ] && break; sleep 0.1; done
expect_error "a run directory in use" "is in use by another difflow train (pid $bpid)" -- "$BIN" train --resume --out "$T/busy"
kill -INT $bpid; wait $bpid

# Ctrl-C / SIGTERM at any moment of a step (here: during the GEMMs of a 1- and a 2-thread run)
# stops with the "interrupted" line, exit 128 + signal, and a checkpoint that loads. A signal
# frame pushed onto a thread inside a oneDNN JIT kernel used to corrupt the heap (abort in
# free(), most tries); src/cli/signals.c takes the signals on a thread of their own.
for k in 1 2 3 4 5 6; do
  th=$(( k % 2 + 1 )); sig=INT; want=130
  if [ $k -gt 4 ]; then sig=TERM; want=143; fi
  "$BIN" train --data moons --steps 200000 --threads $th --out "$T/sig$k" >/dev/null 2>"$T/sig$k.err" & pid=$!
  sleep 0.$(( (k * 37) % 9 + 2 ))
  kill -$sig $pid; wait $pid; rc=$?
  if [ $rc -ne $want ] || ! grep -q "interrupted by signal" "$T/sig$k.err"; then
    fail "SIG$sig try $k ($th threads): exit $rc, expected $want: $(tail -n 2 "$T/sig$k.err")"
  elif ! "$BIN" info --ckpt "$T/sig$k/model.safetensors" >/dev/null 2>&1; then
    fail "SIG$sig try $k: the checkpoint written at the stop does not load"
  else echo "ok   SIG$sig try $k ($th threads): exit $rc"; fi
done

echo "cli_resume: $nfail failed"
[ $nfail -eq 0 ]
