#!/usr/bin/env bash
# difflow lm: train tiny models (rope, learned) on a small text, seeded generation reproduces,
# eval prints one row per length (n/a for learned beyond its table), --resume continues (taking the
# run's model flags and --text, naming the first differing one), a diverging run names its checkpoint
# state, the help text matches docs/LM.md, the YaRN
# flags are recorded, restored and overridable, and bad input gets one "difflow: error:" line and
# a non-zero exit before any work.
set -uo pipefail
BIN="$1"
T=$(mktemp -d /tmp/dfl_lm.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
nfail=0
source "$(dirname "$0")/lib.sh"
fail() { echo "FAIL $*"; nfail=$((nfail+1)); }

# A small text: 12 kB of varied lines (no dependence on installed corpora).
python3 - "$T/text.txt" <<'PY'
import sys, random
r = random.Random(5)
words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jumbo vexing frogs".split()
with open(sys.argv[1], "w") as f:
    while f.tell() < 12000:
        f.write(" ".join(r.choice(words) for _ in range(r.randint(3, 12))) + ".\n%\n")
PY
TINY=(--context 16 --layers 1 --dim 16 --heads 2 --batch 8 --lr 3e-3 --threads 1 --val-bytes 512)

for pe in rope learned; do
  "$BIN" lm train --text "$T/text.txt" --posenc "$pe" "${TINY[@]}" --steps 30 --out "$T/$pe" 2>"$T/$pe.log" \
    || { fail "train $pe: $(tail -2 "$T/$pe.log")"; continue; }
  for f in model.safetensors train_state.safetensors config.json log.csv; do
    [ -s "$T/$pe/$f" ] || fail "train $pe: no $f"
  done
  grep -q "validation" "$T/$pe.log" || fail "train $pe: no validation line"
  # the loss went down from ln 256 = 5.545 nats (to ~4 in 30 steps)
  last=$(tail -1 "$T/$pe/log.csv" | cut -d, -f2)
  python3 -c "import sys; sys.exit(0 if float('$last') < 5.0 else 1)" || fail "train $pe: loss $last did not drop below 5.0"
  a=$("$BIN" lm generate --ckpt "$T/$pe/model.safetensors" --prompt "the " -n 80 --seed 7 --threads 1 2>/dev/null | od -An -tx1)
  b=$("$BIN" lm generate --ckpt "$T/$pe/model.safetensors" --prompt "the " -n 80 --seed 7 --threads 1 2>/dev/null | od -An -tx1)
  c=$("$BIN" lm generate --ckpt "$T/$pe/model.safetensors" --prompt "the " -n 80 --seed 8 --threads 1 2>/dev/null | od -An -tx1)
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "generate $pe: same seed gave different text"
  [ "$a" != "$c" ] || fail "generate $pe: seeds 7 and 8 gave the same text"
  n=$("$BIN" lm generate --ckpt "$T/$pe/model.safetensors" --prompt "the " -n 80 --seed 7 --threads 1 2>/dev/null | wc -c)
  [ "$n" -eq 85 ] || fail "generate $pe: $n bytes, expected 4 + 80 + newline"
  "$BIN" lm eval --ckpt "$T/$pe/model.safetensors" --threads 1 >"$T/$pe.eval" 2>/dev/null || fail "eval $pe: exit $?"
  rows=$(grep -cE '^(16|32|64|128) ' "$T/$pe.eval")
  [ "$rows" -eq 4 ] || fail "eval $pe: $rows length rows, expected 4: $(cat "$T/$pe.eval")"
  echo "ok   $pe: trained, generated, evaluated"
done
# rope extrapolates: four numbers; learned: a number at 1x and n/a beyond its table.
[ "$(grep -cE '^[0-9]+ +[0-9]x +[0-9]+\.[0-9]+$' "$T/rope.eval")" -eq 4 ] || fail "eval rope: not 4 numeric rows: $(cat "$T/rope.eval")"
grep -qE '^16 +1x +[0-9]+\.[0-9]+$' "$T/learned.eval" || fail "eval learned: no number at 1x"
[ "$(grep -c 'n/a (.*learned table' "$T/learned.eval")" -eq 3 ] || fail "eval learned: expected n/a at 2x, 4x, 8x: $(cat "$T/learned.eval")"
# the eval bits/byte at 1x on the whole split is finite and below 8 (uniform)
python3 - "$T/rope.eval" <<'PY' || fail "eval rope: 1x value not in (0, 8)"
import sys
v = [l.split() for l in open(sys.argv[1]) if l[:1].isdigit()]
sys.exit(0 if 0 < float(v[0][2]) < 8 else 1)
PY
# zero-shot NTK scaling at eval time runs
"$BIN" lm eval --ckpt "$T/rope/model.safetensors" --rope-scaling ntk --rope-factor 4 --bytes 300 --threads 1 >/dev/null 2>&1 \
  || fail "eval rope with --rope-scaling ntk"

# --resume continues to more steps; an existing run is refused without it.
expect_error "existing run" "--resume" -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 30 --out "$T/rope"
"$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 40 --resume --out "$T/rope" 2>/dev/null || fail "resume"
grep -q '^40,' "$T/rope/log.csv" || fail "resume: no step 40 in log.csv"
# another encoding on --resume: the first differing setting, both values and the flag, exit 2
expect_error "resume with another posenc" "the run was trained with --posenc rope, not alibi (--posenc)" -- \
  "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 45 --posenc alibi --resume --out "$T/rope"
expect_rc "resume with another posenc exits 2" 2 -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 45 --posenc alibi --resume --out "$T/rope"
expect_error "resume with another dim" "--dim 16, not 32 (--dim)" -- \
  "$BIN" lm train --steps 45 --dim 32 --threads 1 --resume --out "$T/rope"
# a flag checked against the run's other settings: --heads 3 against the run's dim 16
expect_error "resume: heads against the run's dim" "--dim 16 is not divisible by --heads 3 (--heads)" -- \
  "$BIN" lm train --steps 45 --heads 3 --threads 1 --resume --out "$T/rope"
expect_error "resume past --steps" "already at step 40 >= --steps 40" -- "$BIN" lm train --steps 40 --threads 1 --resume --out "$T/rope"
# --out DIR --resume alone: the model flags and --text come from the run (the 12 kB text, not the
# default corpus), and the start step is printed (on a copy: the YaRN checks below use rope at step 40)
cp -r "$T/rope" "$T/rope2"
"$BIN" lm train --out "$T/rope2" --resume --steps 42 --threads 1 --val-bytes 512 2>"$T/resume2.log" || fail "resume with --out only: $(tail -2 "$T/resume2.log")"
grep -q "^difflow: resuming at step 40 of 42$" "$T/resume2.log" || fail "resume: no 'resuming at step 40 of 42' line: $(head -3 "$T/resume2.log")"
grep -q "text $T/text.txt: 12[0-9]\{3\} bytes" "$T/resume2.log" || fail "resume: the run's --text was not taken: $(head -3 "$T/resume2.log")"
grep -q "lm rope, 1 layers, dim 16, 2 heads, context 16:" "$T/resume2.log" || fail "resume: the run's model flags were not taken: $(head -3 "$T/resume2.log")"
grep -q '^42,' "$T/rope2/log.csv" || fail "resume with --out only: no step 42 in log.csv"

# a diverging run stopped before its first checkpoint says so (no checkpoint is claimed) and exits 1
expect_error "non-finite before a checkpoint" "before any checkpoint was written; training stopped (try a lower --lr)" -- \
  "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --lr 1e9 --steps 30 --out "$T/nan"
expect_rc "non-finite loss exits 1" 1 -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --lr 1e9 --steps 30 --out "$T/nan2"
[ -e "$T/nan/model.safetensors" ] && fail "non-finite: a checkpoint was written"

# --help: --rope-factor has no default to show (required with a scaling); --steps states the
# documented measurement of docs/LM.md
help=$("$BIN" lm train --help)
grep -- '--rope-factor' <<<"$help" | grep -q '(default: 1)' && fail "help: --rope-factor shows (default: 1)"
grep -- '--rope-factor' <<<"$help" | grep -q 'required with' || fail "help: --rope-factor does not say it is required with a scaling"
grep -- '--steps' <<<"$help" | grep -q '6.5 CPU-minutes at --threads 1' || fail "help: --steps lacks the measured 6.5 CPU-minutes"
grep -q '6.5 CPU-minutes' "$(dirname "$0")/../docs/LM.md" || fail "docs/LM.md lacks the 6.5 CPU-minutes the help quotes"

# Ctrl-C: finishes the step, saves a checkpoint, exits 130; --resume then ends bit-identical to
# an uninterrupted run with the same flags (windows are drawn per step from the seed).
"$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 1500 --out "$T/ref" 2>/dev/null || fail "reference run"
"$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 1500 --out "$T/int" 2>"$T/int.log" &
pid=$!
for _ in $(seq 1 100); do grep -q "lm train step" "$T/int.log" 2>/dev/null && break; sleep 0.05; done
kill -INT $pid
wait $pid; rc=$?
if [ $rc -eq 0 ]; then
  echo "skip SIGINT: the run finished before the signal"
else
  [ $rc -eq 130 ] || fail "SIGINT: exit $rc, expected 130"
  [ -s "$T/int/model.safetensors" ] || fail "SIGINT: no checkpoint"
  grep -q "interrupted" "$T/int.log" || fail "SIGINT: no message"
  "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 1500 --resume --out "$T/int" 2>/dev/null || fail "resume after SIGINT"
  cmp -s "$T/ref/model.safetensors" "$T/int/model.safetensors" || fail "interrupted + resumed run differs from the uninterrupted one"
  echo "ok   SIGINT $(tail -1 "$T/int.log" | grep -o 'at step [0-9]*'), resumed: identical to the uninterrupted run"
fi

# YaRN flags (paper's alpha/beta; HF rope_scaling beta_slow/beta_fast/original_max_position_embeddings):
# recorded in config.json and the checkpoint, read back by eval, overridable at eval, and changing
# the ramp changes the model's numbers.
"$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 3 --rope-scaling yarn --rope-factor 2 --yarn-alpha 0.5 \
  --yarn-beta-fast 8 --rope-orig-ctx 8 --out "$T/yarn" 2>"$T/yarn.log" || fail "train yarn: $(tail -2 "$T/yarn.log")"
# a validation span shorter than a window gives n/a for that length, not a repeat of a shorter one
"$BIN" lm eval --ckpt "$T/rope/model.safetensors" --bytes 40 --threads 1 >"$T/short.eval" 2>/dev/null || fail "eval --bytes 40"
grep -qE '^32 .* [0-9]+\.[0-9]{4}$' "$T/short.eval" || fail "eval --bytes 40: no figure at 2x: $(cat "$T/short.eval")"
[ "$(grep -c 'n/a (the validation span has 40 bytes' "$T/short.eval")" -eq 2 ] || fail "eval --bytes 40: 4x and 8x not n/a: $(cat "$T/short.eval")"
for kv in '"rope_scaling":"yarn"' '"rope_factor":2' '"yarn_alpha":0.5' '"yarn_beta":8' '"rope_orig_ctx":8'; do
  grep -q "$kv" "$T/yarn/config.json" || fail "train yarn: config.json lacks $kv: $(cat "$T/yarn/config.json")"
done
"$BIN" lm eval --ckpt "$T/yarn/model.safetensors" --bytes 300 --threads 1 >"$T/yarn.eval" 2>/dev/null || fail "eval yarn"
grep -q "scaling yarn x2, alpha 0.5, beta 8, original context 8)" "$T/yarn.eval" \
  || fail "eval yarn: checkpoint's YaRN settings not restored: $(head -1 "$T/yarn.eval")"
"$BIN" lm eval --ckpt "$T/yarn/model.safetensors" --yarn-beta 4 --bytes 300 --threads 1 >"$T/yarn4.eval" 2>/dev/null \
  || fail "eval yarn --yarn-beta 4"
grep -q "alpha 0.5, beta 4, original context 8)" "$T/yarn4.eval" || fail "eval --yarn-beta 4 not applied: $(head -1 "$T/yarn4.eval")"
# rope model (context 16, Dh 8: r = 16 theta_i / 2 pi = 2.55, 0.25, 0.03, 0.003): zero-shot YaRN x4
# with the default ramp (alpha 1, beta 32) against alpha 0.1, beta 2, which keeps pair 0 unscaled.
"$BIN" lm eval --ckpt "$T/rope/model.safetensors" --rope-scaling yarn --rope-factor 4 --bytes 300 --threads 1 \
  >"$T/y1.eval" 2>/dev/null || fail "eval rope + yarn"
"$BIN" lm eval --ckpt "$T/rope/model.safetensors" --rope-scaling yarn --rope-factor 4 --yarn-beta-slow 0.1 --yarn-beta 2 \
  --bytes 300 --threads 1 >"$T/y2.eval" 2>/dev/null || fail "eval rope + yarn, alpha 0.1 beta 2"
grep -q "alpha 1, beta 32, original context 16)" "$T/y1.eval" || fail "eval rope + yarn: defaults: $(head -1 "$T/y1.eval")"
grep -q "alpha 0.1, beta 2, original context 16)" "$T/y2.eval" || fail "eval rope + yarn: flags: $(head -1 "$T/y2.eval")"
[ "$(grep -E '^32 ' "$T/y1.eval")" != "$(grep -E '^32 ' "$T/y2.eval")" ] || fail "the YaRN ramp did not change bits/byte at 2x"
expect_error "yarn flag without yarn" "--yarn-beta applies to --rope-scaling yarn, not none (--yarn-beta)" -- \
  "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --yarn-beta 16 --out "$T/x12"
expect_error "orig ctx with ntk" "--rope-orig-ctx applies to --rope-scaling yarn, not ntk" -- \
  "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --rope-scaling ntk --rope-factor 2 --rope-orig-ctx 8 --out "$T/x13"
expect_error "yarn flag on alibi" "--yarn-alpha" -- "$BIN" lm train --posenc alibi --yarn-alpha 2 --text "$T/text.txt" --out "$T/x14"
expect_error "beta <= alpha" "beta 2 > alpha 4" -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --rope-scaling yarn \
  --rope-factor 2 --yarn-alpha 4 --yarn-beta 2 --out "$T/x15"
expect_error "orig ctx 0" "--rope-orig-ctx" -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --rope-scaling yarn \
  --rope-factor 2 --rope-orig-ctx 0 --out "$T/x16"
expect_error "yarn override on a rope ckpt without yarn" "not none" -- \
  "$BIN" lm eval --ckpt "$T/rope/model.safetensors" --yarn-alpha 2
expect_error "resume with another ramp" "the run was trained with --yarn-beta 8, not 9 (--yarn-beta)" -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" \
  --steps 5 --rope-scaling yarn --rope-factor 2 --yarn-alpha 0.5 --yarn-beta 9 --rope-orig-ctx 8 --resume --out "$T/yarn"

# Bad input: one error line, non-zero exit, nothing trained.
: > "$T/empty.txt"
expect_error "empty text" "empty" -- "$BIN" lm train --text "$T/empty.txt" --out "$T/x1"
expect_error "missing text" "$T/none.txt" -- "$BIN" lm train --text "$T/none.txt" --out "$T/x2"
expect_error "directory as text" "directory" -- "$BIN" lm train --text "$T" --out "$T/x3"
expect_error "text too short" "too few" -- "$BIN" lm train --text "$T/text.txt" --context 20000 --out "$T/x4"
expect_error "unknown posenc" "--posenc" -- "$BIN" lm train --posenc rotary --text "$T/text.txt" --out "$T/x5"
expect_error "learned table" "learned table of 32 positions (--context / --max-positions)" -- "$BIN" lm train --posenc learned --context 64 --max-positions 32 --text "$T/text.txt" --out "$T/x6"
expect_error "odd head dim" "head dimension" -- "$BIN" lm train --posenc rope --dim 28 --heads 4 --text "$T/text.txt" --out "$T/x7"
expect_error "odd rotary dim" "--rotary-dim" -- "$BIN" lm train --posenc rope --rotary-dim 7 --text "$T/text.txt" --out "$T/x8"
expect_error "rotary dim > head" "rotary" -- "$BIN" lm train --posenc rope --rotary-dim 64 --text "$T/text.txt" --out "$T/x9"
expect_error "rope flag on alibi" "--rope-theta" -- "$BIN" lm train --posenc alibi --rope-theta 500 --text "$T/text.txt" --out "$T/x10"
expect_error "heads divide dim" "--heads" -- "$BIN" lm train --dim 30 --heads 4 --text "$T/text.txt" --out "$T/x11"
# the flag named is the one behind the failing check, not one picked by the encoding
expect_error "xpos with scaling" "not xpos (--rope-scaling)" -- "$BIN" lm train --posenc xpos --rope-scaling ntk --rope-factor 2 \
  --text "$T/text.txt" --out "$T/x17"
expect_error "sinusoidal odd dim" "even dim, not 15 (--dim)" -- "$BIN" lm train --posenc sinusoidal --dim 15 --heads 3 \
  --text "$T/text.txt" --out "$T/x18"
expect_error "odd head dim names --dim / --heads" "(--dim / --heads)" -- "$BIN" lm train --posenc rope --dim 28 --heads 4 \
  --text "$T/text.txt" --out "$T/x19"
# unreadable text: the OS's reason (reading /proc/self/mem from offset 0 fails with EIO)
expect_error "unreadable text" "cannot read text file /proc/self/mem: [A-Za-z]" -- "$BIN" lm train --text /proc/self/mem --out "$T/x20"
expect_error "missing text names the reason" "none.txt: No such file" -- "$BIN" lm train --text "$T/none.txt" --out "$T/x21"
expect_error "empty eval text" "text file $T/empty.txt is empty (--text)" -- \
  "$BIN" lm eval --ckpt "$T/rope/model.safetensors" --text "$T/empty.txt" --threads 1
expect_error "unknown lm command" "frob" -- "$BIN" lm frob
expect_error "no ckpt" "--ckpt" -- "$BIN" lm generate
expect_error "not an lm ckpt" "difflow-lm" -- "$BIN" lm eval --ckpt "$T/rope/train_state.safetensors"
expect_error "learned window" "learned table" -- "$BIN" lm generate --ckpt "$T/learned/model.safetensors" --window 64
expect_error "scaling on learned" "--rope-scaling" -- "$BIN" lm eval --ckpt "$T/learned/model.safetensors" --rope-scaling ntk --rope-factor 2
expect_error "bad temperature" "--temperature" -- "$BIN" lm generate --ckpt "$T/rope/model.safetensors" --temperature 0
# exit codes (README): 2 for a flag, value or combination error, 1 for a file that cannot be read
expect_rc "unknown posenc exits 2" 2 -- "$BIN" lm train --posenc rotary --text "$T/text.txt" --out "$T/x5"
expect_rc "flag combination exits 2" 2 -- "$BIN" lm train --posenc alibi --rope-theta 500 --text "$T/text.txt" --out "$T/x10"
expect_rc "--rope-scaling without --rope-factor exits 2" 2 -- "$BIN" lm train --rope-scaling ntk --text "$T/text.txt" --out "$T/x22"
expect_rc "existing run without --resume exits 2" 2 -- "$BIN" lm train --text "$T/text.txt" "${TINY[@]}" --steps 30 --out "$T/learned"
expect_rc "missing text exits 1" 1 -- "$BIN" lm train --text "$T/none.txt" --out "$T/x2"
expect_rc "unreadable text exits 1" 1 -- "$BIN" lm train --text /proc/self/mem --out "$T/x20"
expect_rc "missing ckpt exits 1" 1 -- "$BIN" lm eval --ckpt "$T/none.safetensors"
expect_rc "not an lm ckpt exits 1" 1 -- "$BIN" lm eval --ckpt "$T/rope/train_state.safetensors"
expect_rc "no --ckpt exits 2" 2 -- "$BIN" lm generate
expect_rc "bad temperature exits 2" 2 -- "$BIN" lm generate --ckpt "$T/rope/model.safetensors" --temperature 0
expect_rc "learned window exits 2" 2 -- "$BIN" lm generate --ckpt "$T/learned/model.safetensors" --window 64
expect_rc "unknown lm command exits 2" 2 -- "$BIN" lm frob
for i in $(seq 1 22); do [ -e "$T/x$i" ] && fail "a refused run created $T/x$i"; done

if [ $nfail -ne 0 ]; then echo "$nfail failure(s)"; exit 1; fi
echo "all lm CLI checks passed"
