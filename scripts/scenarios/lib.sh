# Helpers the scenarios share (sourced; they print with echo and read with the shell's read).
# A scenario sets failed=0 first; check and check_that set it to 1 when a figure is wrong.

# value FILE KEY: the number after "KEY:" (meminfo), "Node N KEY:" (node meminfo) or "KEY "
# (vmstat, balloon stats) in FILE; 0 if FILE has no such line
value() {
  local line key rest
  while IFS= read -r line; do
    line=${line#Node * }
    read -r key rest <<< "$line"
    if [ "$key" = "$2:" ] || [ "$key" = "$2" ]; then
      echo "${rest%% *}"
      return
    fi
  done < "$1"
  echo 0
}

# check WHAT GOT WANT
check() {
  if [ "$2" = "$3" ]; then
    echo "   ok: $1 = $2"
  else
    echo "   WRONG: $1 = $2, expected $3"
    failed=1
  fi
}

# check_that WHAT CONDITION...: the condition is a test(1) expression
check_that() {
  local what=$1
  shift
  if test "$@"; then
    echo "   ok: $what"
  else
    echo "   WRONG: $what ($*)"
    failed=1
  fi
}

# indent: copy stdin, three spaces in
indent() {
  local line
  while IFS= read -r line; do echo "   $line"; done
}

# ask FD COMMAND: write a command to an open ctl file and print its answer
ask() {
  echo "$2" >&"$1"
  cat <&"$1"
}
