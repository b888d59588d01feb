#!/usr/bin/env bash
# One chat request to a node container of IMAGE: the check that an image answers, for an image
# no test suite runs (`make image-arm64` runs it on the arm64 image, under emulation on an amd64
# machine). Prints the container's machine, the time to /health 200, the answer and its timings.
#
#   deploy/image/chat.sh IMAGE [MODEL]    (default smollm2-135m-instruct; env: ENGINE, PLATFORM,
#                                          TIMEOUT: seconds allowed for /health and the answer)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/image/env.sh
source deploy/image/env.sh
image=$1
model=${2:-smollm2-135m-instruct}
timeout=${TIMEOUT:-1800}
name=edgellm-chat-$$
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap '"$ENGINE" rm -f "$name" >/dev/null 2>&1 || true' EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

start=$(now)
"$ENGINE" run -d --name "$name" ${PLATFORM:+--platform "$PLATFORM"} -p "127.0.0.1:$port:8080" \
  "$image" node --model "$model" --host 0.0.0.0 --port 8080 >/dev/null
deadline=$(( $(date +%s) + timeout ))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
  if [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$name")" != true ]; then
    echo "== the container stopped before /health answered 200:"
    "$ENGINE" logs --tail 40 "$name"
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "== no /health 200 within $timeout s:"
    "$ENGINE" logs --tail 40 "$name"
    exit 1
  fi
  sleep 2
done
echo "== $image: /health 200 after $(since "$start") s"
echo "== machine in the container: $("$ENGINE" exec "$name" uname -m)"

body=$(python3 -c 'import json, sys; print(json.dumps({"model": sys.argv[1], "max_tokens": 16,
  "temperature": 0, "messages": [{"role": "user", "content": "What is the capital of France?"}]}))' "$model")
t0=$(now)
answer=$(curl -fsS -m "$timeout" -H 'content-type: application/json' -d "$body" \
  "http://127.0.0.1:$port/v1/chat/completions")
echo "== answered in $(since "$t0") s"
python3 -c '
import json, sys
a = json.loads(sys.argv[1])
t = a.get("timings") or {}
print("answer:", repr(a["choices"][0]["message"]["content"]))
print("usage:", a["usage"]["prompt_tokens"], "prompt +", a["usage"]["completion_tokens"], "completion tokens")
pp, tg = t.get("prompt_per_second", 0.0), t.get("predicted_per_second", 0.0)
print(f"timings: prefill {pp:.1f} tok/s, decode {tg:.1f} tok/s")
' "$answer"
