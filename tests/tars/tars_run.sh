#!/usr/bin/env bash
# tars run against the scripted loopback server (fake_server.py), with --dry-run --image as the screen:
# finished, call_user, max steps, malformed reply, server 500 then retry, server down, non-JSON, Ctrl-C,
# the request layout (system, task, images window, assistant history), 1.0 image downscaling.
# usage: tars_run.sh PATH/TO/tars
set -u
T=${1:?usage: tars_run.sh TARS}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
fails=0
check() { # name expected actual
  if [ "$2" != "$3" ]; then echo "FAIL $1: want [$2] got [$3]"; fails=$((fails + 1)); else echo "ok $1"; fi
}
# a PNG of the given size (stdlib zlib), solid grey
mkpng() {
  python3 - "$1" "$2" "$3" <<'PY'
import struct, sys, zlib
w, h, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
raw = b"".join(b"\0" + b"\x80" * (3 * w) for _ in range(h))
open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                       + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
PY
}
mkpng 1920 1080 "$W/fhd.png"
mkpng 640 480 "$W/vga.png"
TASK="open the terminal"
# start_server NAME SCRIPT_JSON [--history N]: sets URL and LOG
start_server() {
  local name=$1 script=$2
  shift 2
  printf '%s' "$script" >"$W/$name.json"
  LOG="$W/$name.log"
  : >"$LOG"
  python3 "$HERE/fake_server.py" "$W/$name.json" "$LOG" "$W/$name.port" --task "$TASK" "$@" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$W/$name.port" ] && break; sleep 0.05; done
  URL="http://127.0.0.1:$(cat "$W/$name.port")/v1"
}
# field LOG N EXPR: a python expression over the Nth logged request e
field() { python3 -c "import json,sys; e=[json.loads(l) for l in open(sys.argv[1])][int(sys.argv[2])]; print($3)" "$1" "$2"; }
nreq() { wc -l <"$1" | tr -d ' '; }
RUN=(run --model ui-tars-1.5-7b --dry-run --image "$W/fhd.png" --interval-ms 0 --retry-delay-ms 10)

# 1. two steps then finished; the second request carries the first reply and both screenshots
start_server fin '[{"content":"Thought: open it\nAction: click(start_box='"'"'(100,200)'"'"')"},
                   {"content":"Thought: done\nAction: finished(content='"'"'listed'"'"')"}]'
mkdir "$W/traj"
out=$($T "${RUN[@]}" --base-url "$URL" --save-dir "$W/traj" "$TASK" 2>"$W/err"); rc=$?
check fin_rc 0 "$rc"
check fin_saved "step-001.json step-001.png step-001.txt step-002.json step-002.png step-002.txt" "$(ls "$W/traj" | paste -sd' ')"
check fin_saved_png "1920x1080
5,5 808080" "$(python3 "$HERE/pngpix.py" "$W/traj/step-002.png" 5,5)"
check fin_saved_txt "Thought: open it
Action: click(start_box='(100,200)')" "$(cat "$W/traj/step-001.txt")"
check fin_saved_json '{"thought":"done","reflection":null,"actions":[{"type":"finished","content":"listed"}]}' "$(cat "$W/traj/step-002.json")"
check fin_out "step 1
thought: open it
action: click(start_box='(100,200)')
  (dry run) click (99, 198)
step 2
thought: done
action: finished(content='listed')
  (dry run) finished \"listed\"
status: end
answer: listed" "$out"
check fin_requests 2 "$(nreq "$LOG")"
check fin_layout1 "True s,u,i [[1920, 1080]]" "$(field "$LOG" 0 'e["ok"], e["roles"], e["images"]')"
# the history reply gets the box tokens back (add_box_token)
check fin_layout2 'True s,u,i,a,i ["Thought: open it\nAction: click(start_box='"'<|box_start|>(100,200)<|box_end|>'"')"]' \
  "$(field "$LOG" 1 'e["ok"], e["roles"], json.dumps(e["assistant"])')"
check fin_params "0 0.7 1000 ui-tars-1.5-7b /v1/chat/completions None" \
  "$(field "$LOG" 0 'e["temperature"], e["top_p"], e["max_tokens"], e["model"], e["path"], e["auth"]')"

# 2. call_user
start_server cu '[{"content":"Thought: I need a password\nAction: call_user()"}]'
out=$($T "${RUN[@]}" --base-url "$URL" "$TASK" 2>"$W/err"); rc=$?
check cu_rc 3 "$rc"
check cu_status "status: call_user" "$(tail -1 <<<"$out")"

# 3. the step limit; history 2 keeps the newest screenshot of the past steps only; sampling flags
start_server ms '[{"content":"Action: scroll(direction='"'"'down'"'"')"}]' --history 2
out=$(TARS_API_KEY=sekrit $T "${RUN[@]}" --base-url "$URL" --max-steps 3 --history 2 --temperature 0.5 --top-p 0.9 \
  --max-tokens 77 "$TASK" 2>"$W/err"); rc=$?
check ms_rc 4 "$rc"
check ms_status "status: max_loop" "$(tail -1 <<<"$out")"
check ms_requests 3 "$(nreq "$LOG")"
check ms_layout3 "True s,u,a,i,a,i" "$(field "$LOG" 2 'e["ok"], e["roles"]')"
check ms_params "0.5 0.9 77 Bearer sekrit" "$(field "$LOG" 2 'e["temperature"], e["top_p"], e["max_tokens"], e["auth"]')"
check ms_err "tars run: reached the step limit (3)" "$(cat "$W/err")"

# 4. malformed reply: asked again (warmer), then error naming the text; no action performed
start_server bad '[{"content":"Thought: I am not sure what to do"}]'
out=$($T "${RUN[@]}" --base-url "$URL" --retries 1 "$TASK" 2>"$W/err"); rc=$?
check bad_rc 1 "$rc"
check bad_out "status: error" "$out"
check bad_requests 2 "$(nreq "$LOG")"
check bad_temps "0 0.1" "$(field "$LOG" 0 'e["temperature"]') $(field "$LOG" 1 'e["temperature"]')"
# the per-attempt line only while another attempt follows; the last error once, from tars run
check bad_err 'tars: step 1: unusable reply: no action in the reply "Thought: I am not sure what to do" (asking again)
tars run: unusable reply: no action in the reply "Thought: I am not sure what to do"' "$(cat "$W/err")"

# 5. a malformed coordinate once, then a good reply
start_server bad1 '[{"content":"Action: click(start_box='"'"'='"'"')"},{"content":"Action: finished()"}]'
out=$($T "${RUN[@]}" --base-url "$URL" "$TASK" 2>"$W/err"); rc=$?
check bad1_rc 0 "$rc"
check bad1_err "tars: step 1: unusable reply: invalid coordinate number \"=\" at position 0 of \"=\" in \"click(start_box='=')\" (asking again)" "$(cat "$W/err")"

# 6. server error 500, then success on the retry
start_server e500 '[{"status":500,"body":"{\"error\":\"overloaded\"}"},{"content":"Action: finished()"}]'
out=$($T "${RUN[@]}" --base-url "$URL" "$TASK" 2>"$W/err"); rc=$?
check e500_rc 0 "$rc"
check e500_requests 2 "$(nreq "$LOG")"
check e500_err "tars: HTTP 500 from $URL/chat/completions: {\"error\":\"overloaded\"} (retrying)" "$(cat "$W/err")"

# 7. persistent 500: error after 1 + retries attempts
start_server e5xx '[{"status":503,"body":"down"}]'
out=$($T "${RUN[@]}" --base-url "$URL" --retries 2 "$TASK" 2>"$W/err"); rc=$?
check e5xx_rc 1 "$rc"
check e5xx_requests 3 "$(nreq "$LOG")"
check e5xx_err "tars: HTTP 503 from $URL/chat/completions: down (retrying)
tars: HTTP 503 from $URL/chat/completions: down (retrying)
tars run: model call failed: HTTP 503 from $URL/chat/completions: down" "$(cat "$W/err")"
# 7b. the backoff: --retry-delay-ms 200 waits 200 ms before the first retry and 400 ms before the second
# (doubled); lower bounds only, from the server's arrival times (a loaded machine only adds time)
gaps() { python3 -c "import json,sys; t=[json.loads(l)['t'] for l in open(sys.argv[1])]; print(' '.join(str(int((b-a)*1000)) for a,b in zip(t,t[1:])))" "$1"; }
start_server backoff '[{"status":503,"body":"down"}]'
t0=$(date +%s%N)
$T "${RUN[@]}" --base-url "$URL" --retries 2 --retry-delay-ms 200 "$TASK" >/dev/null 2>"$W/err"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
read -r g1 g2 <<<"$(gaps "$LOG")"
check backoff_rc "1 3" "$rc $(nreq "$LOG")"
check backoff_gaps "1 1" "$([ "${g1:-0}" -ge 200 ] && echo 1 || echo "$g1 ms") $([ "${g2:-0}" -ge 400 ] && echo 1 || echo "$g2 ms")"
check backoff_total 1 "$([ $ms -ge 600 ] && echo 1 || echo "$ms ms")"

# 8. HTTP 400 is not retried
start_server e400 '[{"status":400,"body":"bad model"}]'
$T "${RUN[@]}" --base-url "$URL" "$TASK" >/dev/null 2>"$W/err"; rc=$?
check e400 "1 1" "$rc $(nreq "$LOG")"

# 9. a non-JSON 200 body
start_server nj '[{"raw":"<html>gateway</html>"}]'
$T "${RUN[@]}" --base-url "$URL" --retries 0 "$TASK" >/dev/null 2>"$W/err"; rc=$?
check nonjson "1 tars run: model call failed: the server's response is not JSON: \"<html>gateway</html>\"" "$rc $(cat "$W/err")"

# 10. server down (a port nobody listens on)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
$T "${RUN[@]}" --base-url "http://127.0.0.1:$PORT/v1" --retries 1 "$TASK" >"$W/out" 2>"$W/err"; rc=$?
check down_rc 1 "$rc"
check down_status "status: error" "$(cat "$W/out")"
grep -q "tars run: model call failed: cannot reach http://127.0.0.1:$PORT/v1/chat/completions" "$W/err" \
  && check down_err 1 1 || check down_err "cannot reach ..." "$(cat "$W/err")"
# one "(retrying)" line per retry, then the final error line once
check down_lines "tars: cannot reach http://127.0.0.1:$PORT/v1/chat/completions (retrying)|tars run: model call failed: cannot reach http://127.0.0.1:$PORT/v1/chat/completions" \
  "$(sed -E 's/(completions): .*\(retrying\)$/\1 (retrying)/; s/(completions): .*$/\1/' "$W/err" | paste -sd'|')"

# 11. Ctrl-C during a long wait(): status user_stopped, exit 130, promptly
start_server sig '[{"content":"Action: wait()"}]'
$T "${RUN[@]}" --base-url "$URL" --wait-ms 20000 "$TASK" >"$W/out" 2>"$W/err" &
TP=$!
for _ in $(seq 100); do grep -q "step 1" "$W/out" 2>/dev/null && break; sleep 0.05; done
t0=$(date +%s%N)
kill -INT $TP
wait $TP; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check sig_rc 130 "$rc"
check sig_status "status: user_stopped" "$(tail -1 "$W/out")"
check sig_fast 1 "$([ $ms -lt 2000 ] && echo 1 || echo "$ms ms")"

# 11b. Ctrl-C while the model call is in flight: the transfer is abandoned, status user_stopped
start_server sig2 '[{"delay":20,"content":"Action: wait()"}]'
$T "${RUN[@]}" --base-url "$URL" "$TASK" >"$W/out" 2>"$W/err" &
TP=$!
for _ in $(seq 100); do [ -s "$LOG" ] && break; sleep 0.05; done
t0=$(date +%s%N)
kill -INT $TP
wait $TP; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check sig2 "130 status: user_stopped 1" "$rc $(tail -1 "$W/out") $([ $ms -lt 2000 ] && echo 1 || echo "$ms ms")"

# 11c. a server slower than --timeout
start_server slow '[{"delay":5,"content":"Action: wait()"}]'
$T "${RUN[@]}" --base-url "$URL" --timeout 1 --retries 0 "$TASK" >/dev/null 2>"$W/err"; rc=$?
check timeout_rc 1 "$rc"
grep -q "^tars run: model call failed: cannot reach $URL/chat/completions: Operation timed out" "$W/err" \
  && check timeout_err 1 1 || check timeout_err "Operation timed out" "$(cat "$W/err")"

# 12. 1.0: the image is downscaled by linear_resize to --max-pixels, coordinates stay relative to the screen
start_server v10 '[{"content":"Action: click(start_box='"'"'(500,500)'"'"')\n\nfinished()"}]'
out=$($T run --model m --dry-run --image "$W/vga.png" --interval-ms 0 --model-version 1.0 --max-pixels 100000 \
  --base-url "$URL" "$TASK" 2>"$W/err"); rc=$?
check v10_rc 0 "$rc"
check v10_image "[[365, 273]]" "$(field "$LOG" 0 'e["images"]')"
check v10_click "action: click(start_box='(500,500)') finished()|  (dry run) click (320, 240)" "$(sed -n 3,4p <<<"$out" | paste -sd'|')"

# 13. --prompt-file replaces the prompt; grounding mode is one step
printf 'Custom. ## Action Space\nclick(start_box=...)\nTask: {instruction}' >"$W/prompt.txt"
start_server gr '[{"content":"Action: click(start_box='"'"'(966,546)'"'"')"}]'
out=$($T "${RUN[@]}" --base-url "$URL" --mode grounding --prompt-file "$W/prompt.txt" "$TASK" 2>"$W/err"); rc=$?
check gr_rc 0 "$rc"
check gr_out "  (dry run) click (960, 540)|status: end" "$(sed -n 4p <<<"$out")|$(tail -1 <<<"$out")"
check gr_requests 1 "$(nreq "$LOG")"

# 13b. a missing --save-dir is created; one that cannot be made or is not a directory ends the run before
# the model is asked
start_server sd '[{"content":"Action: finished()"},{"content":"Action: finished()"}]'
out=$($T "${RUN[@]}" --base-url "$URL" --save-dir "$W/newdir" "$TASK" 2>&1 >/dev/null); rc=$?
check save_dir_new "0 step-001.json step-001.png step-001.txt" "$rc $(ls "$W/newdir" | paste -sd' ')"
out=$($T "${RUN[@]}" --base-url "$URL" --save-dir "$W/nonexistent/sub" "$TASK" 2>&1 >/dev/null); rc=$?
check save_dir_bad "1 tars run: cannot create --save-dir $W/nonexistent/sub: No such file or directory 1" "$rc $out $(nreq "$LOG")"
out=$($T "${RUN[@]}" --base-url "$URL" --save-dir "$W/fhd.png" "$TASK" 2>&1 >/dev/null); rc=$?
check save_dir_file "1 tars run: --save-dir $W/fhd.png is not a directory 1" "$rc $out $(nreq "$LOG")"

# 14. bad usage and no display
out=$($T run --model m "$TASK" 2>&1); check use_nourl "2 tars run: --base-url is required" "$? $out"
out=$($T run --base-url ftp://x --model m "$TASK" 2>&1); check use_scheme "2 tars run: --base-url \"ftp://x\" must start with http:// or https://" "$? $out"
out=$($T run --base-url http://x --model m --max-steps 0 "$TASK" 2>&1); check use_steps "2 tars run: --max-steps \"0\" must be an integer in 1..10000" "$? $out"
out=$($T run --base-url http://x --model m --image "$W/fhd.png" "$TASK" 2>&1); check use_image "2 tars run: --image needs --dry-run (input cannot go to a picture)" "$? $out"
out=$(env -u DISPLAY $T run --base-url http://127.0.0.1:1/v1 --model m "$TASK" 2>&1)
out=$($T run --base-url http://x --model m --dry-run --image "$W/none.png" "$TASK" 2>&1)
check use_noimage "1 tars run: --image: cannot read $W/none.png: No such file or directory" "$? $out"
out=$($T run --base-url http://x --model m --dry-run --image "$W/fhd.png" --prompt-file "$W/none.txt" "$TASK" 2>&1)
check use_noprompt "1 tars run: cannot read --prompt-file $W/none.txt: No such file or directory" "$? $out"
out=$($T run --base-url http://x --model m --model-version 2 "$TASK" 2>&1)
check use_version '2 tars run: --model-version "2" must be 1.0 or 1.5' "$? $out"
out=$(env -u DISPLAY $T run --base-url http://127.0.0.1:1/v1 --model m "$TASK" 2>&1)
check nodisplay "1 tars run: no X display: DISPLAY is not set (tars drives an X11 session; use --dry-run --image FILE to run without one)" "$? $out"

[ $fails = 0 ] || { echo "$fails failed"; exit 1; }
