#!/usr/bin/env bash
# Re-fetch the vendored axe-core (the accessibility checker the browser tests run on every page)
# into tests/web/vendor/axe-core.
#
# For maintainers only: the vendored file is committed, so testing Gentity never needs node.
#
#   AXE_VERSION=4.14.1 scripts/vendor-axe.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/tests/web/vendor/axe-core"
spec="axe-core@${AXE_VERSION:-4.14.1}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# `npm pack` downloads the published tarball only: no install scripts run.
(cd "$work" && npm pack --silent "$spec" >/dev/null)
mkdir -p "$work/axe"
tar -xzf "$work"/axe-core-*.tgz -C "$work/axe" --strip-components=1

rm -rf "$dest"
mkdir -p "$dest"
cp "$work/axe/axe.min.js" "$work/axe/LICENSE" "$dest/"
version="$(node -p "require('$work/axe/package.json').version")"
printf 'axe-core %s\nFetched by scripts/vendor-axe.sh; do not edit by hand.\n' "$version" >"$dest/VERSION"
echo "vendored axe-core $version into $dest"
