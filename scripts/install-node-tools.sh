#!/bin/sh
# Installs the node tools the editor tests talk to (yaml-language-server, the server in
# VS Code's YAML extension) into .venv/node, exactly as scripts/node-tools/package-lock.json
# pins them (versions and integrity hashes). Without npm it only says so: those tests then
# skip and name the package.
set -u
cd "$(dirname "$0")/.." || exit 1
SRC=scripts/node-tools
DEST=.venv/node
# A copy of the lock, written only after a complete install: a changed lock or an
# interrupted install both make the next run install again.
STAMP=$DEST/.installed-lock.json
if ! command -v npm >/dev/null 2>&1; then
  echo "install-node-tools: skipped, no npm (Debian package npm); the editor tests will skip" >&2
  exit 0
fi
if [ -x "$DEST/node_modules/.bin/yaml-language-server" ] && cmp -s "$SRC/package-lock.json" "$STAMP"; then
  exit 0
fi
version=$(sed -n 's/.*"yaml-language-server": *"\([^"]*\)".*/\1/p' "$SRC/package.json")
echo "install-node-tools: installing yaml-language-server $version into $DEST" >&2
mkdir -p "$DEST"
rm -f "$STAMP"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
log=$DEST/npm-ci.log
# npm ci installs what the lock says or fails; it never resolves versions anew.
if npm ci --prefix "$DEST" --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
  cp "$SRC/package-lock.json" "$STAMP"
  rm -f "$log"
else
  # make setup also serves `make run`, which needs no node: an offline machine goes on.
  echo "install-node-tools: npm ci failed (see $log); the editor tests will skip" >&2
fi
exit 0
