#!/bin/sh
# The retrain worker's trainer command on Kubernetes:
#   [retrain] command = ["/opt/fleetal/deploy/kubernetes/run-trainer-job.sh"]
# The worker appends `--job-dir DIR` (a directory on the shared claim fleetal-retrain). This
# creates the Job of trainer-job.yaml for it, waits for it to finish and exits 0 when it
# succeeded, 1 when it failed (the worker then reads DIR/result.json, or fails the attempt).
# Needs kubectl and a service account allowed to create, get and delete Jobs.
set -eu
[ "${1:-}" = "--job-dir" ] && [ -n "${2:-}" ] || { echo "usage: $0 --job-dir DIR" >&2; exit 2; }
JOB_DIR=$2
JOB_NAME="fleetal-trainer-$(basename "$JOB_DIR" | tr -c 'a-z0-9-\n' '-')"
export JOB_DIR JOB_NAME
here=$(dirname "$0")
sed -e "s|\${JOB_NAME}|$JOB_NAME|g" -e "s|\${JOB_DIR}|$JOB_DIR|g" "$here/trainer-job.yaml" \
  | kubectl create -f -
trap 'kubectl delete job "$JOB_NAME" --wait=false >/dev/null 2>&1 || true' TERM INT
kubectl wait --for=condition=complete --timeout=-1s "job/$JOB_NAME" &
ok=$!
kubectl wait --for=condition=failed --timeout=-1s "job/$JOB_NAME" &
failed=$!
while kill -0 "$ok" 2>/dev/null && kill -0 "$failed" 2>/dev/null; do sleep 5; done
kubectl logs "job/$JOB_NAME" --all-containers || true
if ! kill -0 "$ok" 2>/dev/null && wait "$ok"; then kill "$failed" 2>/dev/null || true; exit 0; fi
kill "$ok" 2>/dev/null || true
exit 1
