# Sourced: sets PY to the interpreter that has ec2emu installed (the project venv if there is one).
if [ -x "$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/python" ]; then
  PY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
else
  PY=$(command -v python3)
fi
export PATH="$(dirname "$PY"):$PATH"
