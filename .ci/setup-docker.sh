#!/usr/bin/env bash
# CI set-up for the Docker sandbox (as root, idempotent): Debian's Docker engine and debootstrap,
# a running dockerd, and the sandbox image built offline by `selfloop sandbox build`.
# Each step is skipped when already done; a second run only checks the image is up to date.
# The image holds selfloop as installed in .venv (or the `selfloop` on PATH): where .venv exists but
# its install is still under way, the build waits for it (at most SELFLOOP_WAIT_S, default 900 s).
set -euo pipefail
cd "$(dirname "$0")/.."

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

find_selfloop() {
    if [ -x .venv/bin/selfloop ]; then echo .venv/bin/selfloop; else command -v "${SELFLOOP:-selfloop}" || true; fi
}
SELFLOOP=$(find_selfloop)
if [ -z "$SELFLOOP" ] && [ -d .venv ]; then
    echo "setup-docker: waiting for the install into .venv to finish (at most ${SELFLOOP_WAIT_S:-900} s)"
    for _ in $(seq "${SELFLOOP_WAIT_S:-900}"); do
        SELFLOOP=$(find_selfloop)
        [ -n "$SELFLOOP" ] && break
        sleep 1
    done
fi
if [ -z "$SELFLOOP" ]; then
    echo "setup-docker: no selfloop to build the image with (.venv/bin/selfloop or on PATH): install it, then rerun" >&2
    exit 1
fi
"$SELFLOOP" sandbox build
"$SELFLOOP" sandbox check
