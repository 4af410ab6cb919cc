#!/usr/bin/env bash
# Re-fetch the vendored xterm.js and its fit addon into src/gentity/server/web/static/vendor.
#
# For maintainers only: the vendored files are committed, so serving or testing Gentity never
# needs node. Run this to move to a newer xterm, review the diff, and commit it.
#
#   scripts/vendor-xterm.sh                 # the latest published versions
#   XTERM_VERSION=5.5.0 FIT_VERSION=0.10.0 scripts/vendor-xterm.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/src/gentity/server/web/static/vendor"
xterm_spec="@xterm/xterm@${XTERM_VERSION:-latest}"
fit_spec="@xterm/addon-fit@${FIT_VERSION:-latest}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# `npm pack` downloads the published tarballs only: no install scripts run.
(cd "$work" && npm pack --silent "$xterm_spec" "$fit_spec" >/dev/null)
mkdir -p "$work/xterm" "$work/fit"
tar -xzf "$work"/xterm-xterm-*.tgz -C "$work/xterm" --strip-components=1
tar -xzf "$work"/xterm-addon-fit-*.tgz -C "$work/fit" --strip-components=1

rm -rf "$dest/xterm" "$dest/addon-fit"
mkdir -p "$dest/xterm" "$dest/addon-fit"
cp "$work/xterm/lib/xterm.js" "$work/xterm/css/xterm.css" "$work/xterm/LICENSE" "$dest/xterm/"
cp "$work/fit/lib/addon-fit.js" "$work/fit/LICENSE" "$dest/addon-fit/"
# Source maps point at files that are not vendored; drop the reference so browsers don't 404.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/xterm/xterm.js" "$dest/addon-fit/addon-fit.js"

xterm_version="$(node -p "require('$work/xterm/package.json').version")"
fit_version="$(node -p "require('$work/fit/package.json').version")"
cat >"$dest/VERSIONS" <<VERSIONS
@xterm/xterm $xterm_version
@xterm/addon-fit $fit_version
Fetched by scripts/vendor-xterm.sh; do not edit by hand.
VERSIONS
echo "vendored @xterm/xterm $xterm_version and @xterm/addon-fit $fit_version into $dest"
