#!/bin/sh
# One scheduled retrain, as deploy/crontab and deploy/digitpipe-retrain.service run it:
#   1. make pull: data, outputs and the run-cache from the DVC remote (the default remote, or
#      DVC_REMOTE=s3://... from the environment). A failed pull (an empty remote on the first
#      run, no remote reachable) is reported and tolerated: the retrain then recomputes.
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
make pull || echo "deploy/retrain.sh: make pull failed (an empty remote?); retraining without it."
.venv/bin/digitpipe retrain "$@" || exit $?
make push
