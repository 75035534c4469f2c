#!/usr/bin/env bash
# Install the operating-system packages vigilflow needs, when they are missing.
# Runs as part of `make demo` / `make test`; does nothing when everything is there.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# the streamer tests publish a clip with ffmpeg to a real RTSP server (rtsp-server-perl)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v rtsp-server-perl >/dev/null || need+=(rtsp-server-perl)
# the alerting tests store alerts in a real Redis
command -v redis-server >/dev/null || need+=(redis-server)
# the review page's tests drive a real headless browser (Playwright with Debian's chromium)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "vigilflow needs these system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
