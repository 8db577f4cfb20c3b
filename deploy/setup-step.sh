#!/usr/bin/env bash
# One step of `make setup`: its output goes to the setup log, one line says what it did and
# how long it took; on failure the log's tail and its path are printed.
#   deploy/setup-step.sh "what it does" command args...
set -uo pipefail
what=$1
shift
log=${SETUP_LOG:-.intentstream/logs/setup.log}
mkdir -p "$(dirname "$log")"
printf '>> %s ... ' "$what"
started=$EPOCHREALTIME
printf '\n== %s %s: %s\n' "$(date -Is)" "$what" "$*" >>"$log"
"$@" >>"$log" 2>&1
rc=$?
elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
if [ "$rc" -eq 0 ]; then
  printf 'done (%ss)\n' "$elapsed"
else
  printf 'FAILED after %ss (exit %d); the end of its output:\n' "$elapsed" "$rc"
  tail -n 25 "$log" | sed 's/^/   | /'
  printf '   the full log: %s\n' "$log"
fi
exit "$rc"
