#!/bin/sh
# Bench service: takes 0.3 s to exit after SIGTERM. Usage: slow.sh READY_FILE
# Kills its own idle child on TERM, so it leaves nothing behind even when only its
# PID (not its process group) is signalled.
c=
trap 'kill $c 2>/dev/null; sleep 0.3; exit 0' TERM
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
while :; do
    sleep 3600 &
    c=$!
    wait $c
done
