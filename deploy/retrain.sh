#!/bin/sh
# One scheduled retrain, as deploy/crontab and deploy/digitpipe-retrain.service run it:
#   1. make pull: data, outputs and the run-cache from the DVC remote (the default remote, or
#      DVC_REMOTE=s3://... from the environment). An empty remote (the first run) pulls nothing
#      and succeeds; a failed pull (a missing plugin, wrong credentials, no answer) ends the run
#      with its status before any retrain, as its push would fail too.
#   2. digitpipe retrain [ARGS]: dvc repro, register, the champion/challenger gate, the drift
#      report (reports/retrain/); "nothing new" when there is no new model.
#   3. make push: outputs and the run-cache back to the remote, only after a successful retrain,
#      so the next run (or a teammate's `make pull` + `dvc repro`) executes no stage.
# Runs from the clone it lives in; a second copy started while one runs exits at once.
set -u
cd "$(dirname "$0")/.." || exit 1
mkdir -p .digitpipe
exec 9>.digitpipe/schedule.lock
if ! flock -n 9; then
    echo "deploy/retrain.sh: skipped: another scheduled retrain is running."
    exit 0
fi
echo "deploy/retrain.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
make pull || {
    status=$?
    echo "deploy/retrain.sh: make pull failed (above); fix the remote and rerun. Nothing retrained."
    exit "$status"
}
.venv/bin/digitpipe retrain "$@" || exit $?
make push
