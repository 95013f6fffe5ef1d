# Sourced by the scripts: a venv that is (re)installed only when what it was built from
# changed, so a second run starts at once.
#
# ensure_venv DIR SPEC [PYTHON]: DIR holds `pip install -e SPEC` made with PYTHON
# (default python3). Its stamp, one per SPEC, is the hash of pyproject.toml and the
# interpreter's version; a venv whose stamp matches is used as it is.
ensure_venv() {
  local dir=$1 spec=$2 python=${3:-python3}
  local stamp file
  stamp=$( { cat pyproject.toml; "$python" -VV; } | sha256sum | cut -d' ' -f1)
  # One stamp per SPEC: the demo's `.` and the tests' `.[dev]` share the venv.
  file="$dir/.installed-$(echo "$spec" | sha256sum | cut -c1-12)"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$file" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  # The distribution was once named `concordia` (the index's `concordia` is another
  # project): a venv made then still has it, and with it the reference domain installed.
  "$dir/bin/python" -m pip uninstall -q -y concordia >/dev/null 2>&1 || true
  "$dir/bin/python" -m pip install -q -e "$spec"
  echo "$stamp" > "$file"
}
