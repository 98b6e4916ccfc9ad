#!/usr/bin/env bash
# Checks the Prometheus alert rules in deploy/alerts.yaml offline: promtool parses every
# rule (PromQL, durations, templates) and runs the rules' unit tests
# (tests/alerts/alerts.test.yaml: each alert fires when it should and stays quiet
# otherwise). That each metric an alert names is one the daemon exports is a Rust test
# (metrics::tests). promtool comes from Debian's prometheus package (scripts/test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
promtool check rules deploy/alerts.yaml
promtool test rules tests/alerts/alerts.test.yaml
