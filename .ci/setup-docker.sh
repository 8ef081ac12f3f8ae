#!/usr/bin/env bash
# CI set-up for the Docker sandbox (as root, idempotent): Debian's Docker engine and debootstrap,
# a running dockerd, and the sandbox image built offline by `selfloop sandbox build`.
# Each step is skipped when already done; a second run only checks the image is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/selfloop ]; then SELFLOOP=.venv/bin/selfloop; else SELFLOOP=${SELFLOOP:-selfloop}; fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-docker: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! engine_answers; then
    echo "setup-docker: starting dockerd (log: /tmp/dockerd.log)"
    nohup dockerd > /tmp/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        engine_answers && break
        sleep 1
    done
    if ! engine_answers; then
        echo "setup-docker: dockerd did not answer within 60 s:" >&2
        tail -n 20 /tmp/dockerd.log >&2
        exit 1
    fi
fi

"$SELFLOOP" sandbox build
"$SELFLOOP" sandbox check
