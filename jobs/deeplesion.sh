#!/usr/bin/env bash
# Ingest DeepLesion into lesiondb and report. Settings: see deeplesion.env.
set -euo pipefail
: "${DEEPLESION_DL_INFO:?set DEEPLESION_DL_INFO (see jobs/deeplesion.env)}"
report="${REPORT:-ingest-deeplesion-$(date +%Y%m%dT%H%M%S).json}"
args=(ingest deeplesion "$DEEPLESION_DL_INFO" --batch-size "${BATCH_SIZE:-2000}" --json)
if [ -n "${DEEPLESION_IMAGES:-}" ] && [ -d "$DEEPLESION_IMAGES" ]; then
  args+=(--images "$DEEPLESION_IMAGES")
fi
lesiondb --no-progress "${args[@]}" > "$report"
lesiondb stats --json
rejected=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["rejected"])' "$report")
echo "report: $report (rejected rows: $rejected)" >&2
if [ "$rejected" != "0" ] && [ "${ALLOW_REJECTS:-0}" != "1" ]; then
  exit 3
fi
