#!/bin/sh
# `make run`: publish the example inventory from this repo's main, then watch main and
# serve the roots on 127.0.0.1 until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
G=.venv/bin/gitprov
# The example's secrets are sealed to a public DEMO key (examples/demo-private-key.txt).
export GITPROV_PRIVATE_KEY_FILE="${GITPROV_PRIVATE_KEY_FILE:-examples/demo-private-key.txt}"
HTTP_PORT="${HTTP_PORT:-8080}"
TFTP_PORT="${TFTP_PORT:-6969}"

$G publish --rev main
$G serve --http-port "$HTTP_PORT" --tftp-port "$TFTP_PORT" &
SERVE=$!
WATCH=
# Whatever ends the script stops both (a kill of one already gone is no failure: a TERM
# to the whole group stopped it first).
trap 'kill $SERVE $WATCH 2>/dev/null || :; wait 2>/dev/null || :' EXIT
# Ctrl-C or a TERM is how `make run` ends: a clean stop, not a failure of make. (A TERM
# to this shell alone, as make passes one on, is taken at once: the shell waits for
# watch with `wait`, which a signal interrupts, not as a foreground command.)
trap 'exit 0' INT TERM
sleep 0.5
MAC=0021f2011b19
echo
echo "Fetch and decrypt a device's file as the device would:"
echo "  curl -s http://127.0.0.1:$HTTP_PORT/fv$MAC.conf | openssl enc -d -aes-256-cbc -md md5 -k \"\$(GITPROV_PRIVATE_KEY_FILE=$GITPROV_PRIVATE_KEY_FILE $G key $MAC)\""
echo "  (over TFTP: tftp 127.0.0.1 $TFTP_PORT -m binary -c get fv$MAC.conf /tmp/fv.conf)"
echo "Commit to main and watch it publish; Ctrl-C stops."
echo
# watch refuses to publish where the inventory alone says: the operator (here, this
# script) names the state dir and allows the var/ roots of the example inventory.
$G watch --branch main --state-dir var/state --allow-root "$PWD/var" &
WATCH=$!
code=0
wait $WATCH || code=$?
WATCH=
# (terminated by a TERM to the whole group: 143)
case $code in 130 | 143) exit 0 ;; esac
exit $code
