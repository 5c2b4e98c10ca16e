#!/usr/bin/env bash
# `sam build` needs the Lambda runtime's Python (3.12) on PATH. pyenv machines often have
# it installed but not selected, so select it for this command only. Without it the build
# is skipped with a note (or fails with --required, as `make deploy` asks).
set -euo pipefail
sam="$1"; required="${2:-}"
if ! python3.12 --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  v312=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | tail -n 1 || true)
  if [ -n "$v312" ]; then
    export PYENV_VERSION="$(pyenv version-name 2>/dev/null | tr '\n' ':')$v312"
  fi
fi
if ! python3.12 --version >/dev/null 2>&1; then
  if [ "$required" = "--required" ]; then
    echo "sam build needs python3.12 on PATH" >&2; exit 1
  fi
  echo "skipping sam build: no python3.12 on this machine (the Lambda runtime's Python)"
  exit 0
fi
"$sam" build --cached
