# Shared helpers for the command-line tests (sourced, not run; ctest runs tests/cli_*.sh).
# Callers set nfail=0 first.

# expect_error NAME PATTERN -- command...: the command exits non-zero and prints exactly one
# "difflow: error:" line, which contains PATTERN.
expect_error() {
  local name="$1" pat="$2"; shift 3
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL $name: exit 0"; nfail=$((nfail+1)); return; fi
  if ! grep -q "^difflow: error: " <<<"$err"; then echo "FAIL $name: no 'difflow: error:' line: $err"; nfail=$((nfail+1)); return; fi
  if ! grep -q -- "$pat" <<<"$err"; then echo "FAIL $name: message lacks '$pat': $err"; nfail=$((nfail+1)); return; fi
  if [ "$(grep -c '^difflow: error: ' <<<"$err")" -ne 1 ]; then echo "FAIL $name: more than one error line: $err"; nfail=$((nfail+1)); return; fi
  echo "ok   $name: $(grep '^difflow: error: ' <<<"$err")"
}

# expect_rc NAME CODE -- command...: the command exits with CODE (2: invalid command line, 1: a run
# that fails, 128 + signal: stopped by a signal; README).
expect_rc() {
  local name="$1" want="$2"; shift 3
  "$@" >/dev/null 2>&1; local rc=$?
  if [ $rc -ne "$want" ]; then echo "FAIL $name: exit $rc, expected $want"; nfail=$((nfail+1)); else echo "ok   $name: exit $rc"; fi
}
