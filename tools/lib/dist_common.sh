# Shared by tools/dist_train.sh, tools/dist_test.sh and tools/dist_launch.sh; sourced, not run.
#
# Every check runs before torchrun starts: a bad input is one "error: ..." line on stderr and exit
# status 2 (as the Python tools print it), not the same error from every process followed by
# torchrun's ChildFailedError. USAGE (set by the sourcing script) ends each argument error.

#: The repository root (this file is tools/lib/dist_common.sh).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

die() {
  echo "error: $*" >&2
  exit 2
}

# require_positive_int NAME VALUE: NPROC, NNODES.
require_positive_int() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'; usage: $USAGE"
}

# check_launch_environment: the multi-node variables (NNODES, NODE_RANK, PORT), if set, are numbers
# torchrun accepts; defaults filled in.
check_launch_environment() {
  NNODES=${NNODES:-1}
  NODE_RANK=${NODE_RANK:-0}
  PORT=${PORT:-29500}
  MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
  require_positive_int NNODES "$NNODES"
  [[ $NODE_RANK =~ ^[0-9]+$ ]] && (( 10#$NODE_RANK < NNODES )) ||
    die "NODE_RANK must be an integer from 0 to NNODES - 1 = $(( NNODES - 1 )), got '$NODE_RANK'"
  [[ $PORT =~ ^[0-9]+$ ]] && (( 10#$PORT >= 1 && 10#$PORT <= 65535 )) ||
    die "PORT must be a TCP port number (1-65535), got '$PORT'"
}

# require_file WHAT PATH: a local input file the launched script reads (config, checkpoint).
require_file() {
  local where=""
  [[ $2 == /* ]] || where=" (relative to $(pwd))"
  [[ -e $2 ]] || die "$1 $2 does not exist$where; usage: $USAGE"
  [[ -f $2 ]] || die "$1 $2 is not a file$where; usage: $USAGE"
}

# is_url PATH: a checkpoint the launched script downloads (http://, https://, s3://, ...).
is_url() {
  [[ $1 =~ ^[A-Za-z][A-Za-z0-9+.-]*:// ]]
}

# find_python: sets PYTHON to the project's interpreter the way the README's commands find it
# (tools/run_tests.sh, tools/run_demo.sh): $PYTHON if set, else the .venv that
# tools/setup_env.sh creates, else python3; it must import torch (torchrun is torch's).
find_python() {
  local origin="PYTHON=${PYTHON:-}" reason
  if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO_ROOT/.venv/bin/python ]]; then
      PYTHON=$REPO_ROOT/.venv/bin/python
      origin=$PYTHON
    else
      PYTHON=python3
      origin="python3 (PYTHON is not set and there is no $REPO_ROOT/.venv)"
    fi
  fi
  local fix="run 'bash tools/setup_env.sh' (it creates $REPO_ROOT/.venv), or set PYTHON to an"
  fix+=" interpreter with torch and this project"
  command -v "$PYTHON" >/dev/null || die "$origin: no such command; $fix"
  if ! reason=$("$PYTHON" -c 'import torch.distributed.run' 2>&1); then
    reason=$(printf '%s\n' "$reason" | tail -n 1)
    die "$origin cannot start torchrun (${reason:-import torch.distributed.run failed}); $fix"
  fi
}
