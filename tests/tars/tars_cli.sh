#!/usr/bin/env bash
# tars resize / tars parse from the command line: exact output, exit codes, one-line errors.
# usage: tars_cli.sh PATH/TO/tars
set -u
T=${1:?usage: tars_cli.sh TARS}
fails=0
check() { # name expected actual
  if [ "$2" != "$3" ]; then echo "FAIL $1: want [$2] got [$3]"; fails=$((fails + 1)); else echo "ok $1"; fi
}
check resize_fhd "1932 1092" "$($T resize 1920 1080)"
check resize_tie "1512 1008" "$($T resize 1522 1022)"
check resize_max "4760 2688" "$($T resize 7680 4320)"
check resize_min "280 280" "$($T resize 10 10)"
check resize_maxp "1344 756" "$($T resize 1920 1080 --max-pixels 1058400)"
check resize_minp "56 56" "$($T resize 10 10 --min-pixels 3136)"
out=$($T resize 2010 10 2>&1); rc=$?
check resize_ratio_rc 1 "$rc"
check resize_ratio_msg "tars resize: absolute aspect ratio must be smaller than 200, got 201" "$out"
out=$($T resize 1920 abc 2>&1); rc=$?
check resize_bad_rc 2 "$rc"
check resize_bad_msg 'tars resize: height "abc" is not a positive integer' "$out"
out=$($T resize 1920 1080 --max-pixels 2>&1); rc=$?
check resize_noval "2 tars resize: --max-pixels needs a value" "$rc $out"
out=$($T resize -5 10 2>&1); rc=$?
check resize_negative '2 tars resize: width "-5" is not a positive integer' "$rc $out"
out=$($T resize 1920 1080 -x 2>&1); rc=$?
check resize_unknown '2 tars resize: unknown option "-x"' "$rc $out"
out=$($T resize --help 2>&1); rc=$?
check resize_help "0 usage: tars resize W H [--min-pixels N] [--max-pixels N]" "$rc $(head -1 <<<"$out")"
out=$($T parse --help 2>&1 </dev/null); rc=$?
check parse_help "0 usage: tars parse [options] < reply.txt|  --width W          screen width (1920)" "$rc $(grep -e usage -e -width <<<"$out" | paste -sd'|')"
out=$($T parse --width x 2>&1 </dev/null); rc=$?
check parse_badwidth '2 tars parse: --width "x" is not a positive integer' "$rc $out"

check parse_p1 '{"thought":"Click the button","reflection":null,"actions":[{"type":"click","x":192,"y":216,"screen":[192,216],"model":[100,200]}]}' \
  "$(printf "Thought: Click the button\nAction: click(start_box='(100,200)')" | $T parse --model-version 1.0)"
check parse_p15 '{"thought":"t","reflection":null,"actions":[{"type":"click","x":99,"y":198,"screen":[99.379,197.802],"model":[100,200]},{"type":"type","text":"hello","enter":false}]}' \
  "$(printf "Thought: t\nAction: click(start_box='(100,200)')\n\ntype(content='hello')" | $T parse --model-version 1.5 --width 1920 --height 1080)"
check parse_phone '{"thought":null,"reflection":null,"actions":[{"type":"long_press","x":495,"y":598,"screen":[494.505,598.007],"model":[500,600]}]}' \
  "$(printf "Action: long_press(start_box='(500,600)')" | $T parse --width 1080 --height 2400)"
out=$(printf "Action: click(start_box='')" | $T parse 2>&1); rc=$?
check parse_empty "1 tars parse: parse error: click's start_box is empty in \"click(start_box='')\"" "$rc $out"
out=$(printf "Thought: nothing to do" | $T parse 2>&1); rc=$?
check parse_noaction "1 tars parse: parse error: no action in the reply \"Thought: nothing to do\"" "$rc $out"
out=$(printf "Action: wait()" | $T parse --model-version 2.0 2>&1); rc=$?
check parse_badver "2 tars parse: --model-version \"2.0\" must be 1.0 or 1.5" "$rc $out"
out=$($T prompt --model-version 2.0 x 2>&1); rc=$?
check prompt_badopt '2 tars prompt: unknown option "--model-version" (see tars prompt --help)' "$rc $out"
out=$($T prompt --prompt-file /nonexistent/p.txt x 2>&1); rc=$?
check prompt_nofile "1 tars prompt: cannot read --prompt-file /nonexistent/p.txt: No such file or directory" "$rc $out"
out=$($T screenshot -o /tmp/tars_cli_shot.jpg 2>&1); rc=$?
check shot_notpng '2 tars screenshot: -o "/tmp/tars_cli_shot.jpg" must end in .png (tars writes PNG only)' "$rc $out"
[ -e /tmp/tars_cli_shot.jpg ] && check shot_notpng_nofile "absent" "written" || check shot_notpng_nofile 1 1
ADVICE="(tars drives an X11 session: start an X server, e.g. Xvfb :99, and set DISPLAY=:99)"
out=$(env -u DISPLAY $T screenshot -o /tmp/tars_cli_shot.png 2>&1); rc=$?
check shot_nodisplay "1 tars screenshot: no X display: DISPLAY is not set $ADVICE" "$rc $out"
out=$(env -u DISPLAY $T do --dry-run "wait()" 2>&1); rc=$?
check do_nodisplay "1 tars do: no X display: DISPLAY is not set $ADVICE" "$rc $out"
out=$($T frob 2>&1); rc=$?
check unknown_cmd "2 tars: unknown command \"frob\" (try tars --help)" "$rc $out"
[ $fails = 0 ] || { echo "$fails failed"; exit 1; }
