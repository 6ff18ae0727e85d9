#!/usr/bin/env bash
# Install the pinned browser SDKs (package-lock.json) and copy their UMD bundles into
# web/static/vendor/, which the viewer page serves from our own origin (no CDN).
# axe-core (accessibility checks) goes to tests/web/vendor/ instead: the browser tests inject
# it into pages; it is never served to visitors.
# Idempotent: does nothing when the bundles already match the lock file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="$here/../static/vendor"
stamp="$vendor/.lock-sha256"
testvendor="$here/../../tests/web/vendor"

if ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: npm is not installed; the viewer needs it once to fetch its browser SDKs" >&2
  exit 1
fi

want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" \
      && -f "$vendor/agora-rtc-sdk-ng.js" && -f "$vendor/livekit-client.umd.js" \
      && -f "$testvendor/axe.min.js" ]]; then
  exit 0
fi

cd "$here"
# --ignore-scripts: the bundles need no build step and we run no third-party install hooks.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

mkdir -p "$vendor"
cp node_modules/agora-rtc-sdk-ng/AgoraRTC_N-production.js "$vendor/agora-rtc-sdk-ng.js"
cp node_modules/livekit-client/dist/livekit-client.umd.js "$vendor/livekit-client.umd.js"
mkdir -p "$testvendor"
cp node_modules/axe-core/axe.min.js "$testvendor/axe.min.js"
echo "$want" > "$stamp"
echo "install.sh: browser SDKs copied to web/static/vendor/"
