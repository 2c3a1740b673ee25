#!/usr/bin/env bash
# Build the Toxiproxy server (v2.12.0) with Go into $(go env GOPATH)/bin/server.
# The module path and its go 1.23 requirement come from Toxiproxy's go.mod.
set -euo pipefail
bin="$(go env GOPATH)/bin/server"
if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "toxiproxy/v2[[:space:]]*v2.12.0"; then
  echo "toxiproxy server v2.12.0 already at $bin"
  exit 0
fi
go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0
echo "toxiproxy server installed at $bin"
