#!/usr/bin/env bash
# Builds the three consumers of an exported model into bindings_tests/build/:
#   ort_c            C11   + onnxruntime C API
#   ort_cpp          C++17 + onnxruntime C++ API
#   torchscript_cpp  C++17 + libtorch (torch::jit::load)
# Libraries come from the venv's wheels: onnxruntime's capi/libonnxruntime.so.1.* and torch's lib/.
# The wheel has no onnxruntime headers: they come from Debian trixie's libonnxruntime-dev, fetched with
# apt-get download under a private apt configuration kept in build/ort/apt (the system's apt is not touched).
#
# Idempotent: each step is skipped when its result is newer than its inputs. Environment:
#   PY=path/to/python       the venv's python (default: .venv/bin/python at the repository root)
#   ORT_INCLUDE_DIR=dir     use these onnxruntime headers instead of fetching Debian's
#   DEBIAN_MIRROR=url       where to fetch the headers from (default http://deb.debian.org/debian)
#   CC, CXX                 compilers (default gcc, g++)
# Exit status: 0 built, 3 the onnxruntime headers could not be fetched (Debian's registry unreachable),
# 1 anything else.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$HERE/build
PY=${PY:-$ROOT/.venv/bin/python}
CC=${CC:-gcc}
CXX=${CXX:-g++}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEB_SUITE=trixie
DEB_PACKAGE=libonnxruntime-dev
START=$(date +%s.%N)

say() { echo "bindings: $*" >&2; }
die() { say "error: $*"; exit 1; }
elapsed() { echo "$(date +%s.%N) $START" | awk '{printf "%.1f", $1 - $2}'; }

[ -x "$PY" ] || die "no python at $PY (run 'make install' first, or set PY=)"
mkdir -p "$BUILD"

# --- 1. onnxruntime headers ----------------------------------------------------------------------------------------
fetch_headers() {
  local ort=$BUILD/ort apt=$BUILD/ort/apt keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb are needed to fetch the headers (or set ORT_INCLUDE_DIR)"
  [ -r "$keyring" ] || die "$keyring not found (package debian-archive-keyring; or set ORT_INCLUDE_DIR)"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$apt/preferences.d" \
           "$apt/download"
  echo "deb [signed-by=$keyring] $DEBIAN_MIRROR $DEB_SUITE main" > "$apt/sources.list"
  : > "$apt/status"
  local opts=(
    -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=$apt/sources.list.d"
    -o "Dir::Etc::preferences=$apt/preferences" -o "Dir::Etc::preferencesparts=$apt/preferences.d"
    -o "Dir::State=$apt" -o "Dir::State::lists=$apt/lists" -o "Dir::State::status=$apt/status"
    -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
    -o "Acquire::Retries=2" -o "Acquire::http::Timeout=30" -o "Acquire::Languages=none"
  )
  say "fetching $DEB_PACKAGE from Debian $DEB_SUITE (private apt state in ${apt#"$ROOT"/})"
  if ! apt-get -q "${opts[@]}" --error-on=any update >"$apt/update.log" 2>&1; then
    cat "$apt/update.log" >&2
    say "error: cannot reach Debian's package registry ($DEBIAN_MIRROR)"
    exit 3
  fi
  rm -f "$apt/download"/*.deb
  if ! (cd "$apt/download" && apt-get -q "${opts[@]}" download "$DEB_PACKAGE") >"$apt/download.log" 2>&1; then
    cat "$apt/download.log" >&2
    die "apt-get download $DEB_PACKAGE failed"
  fi
  # Unpack into a fresh directory and move it into place only once the headers are found there.
  rm -rf "$ort/root.new" && mkdir -p "$ort/root.new"
  dpkg-deb -x "$apt/download"/*.deb "$ort/root.new"
  local header
  header=$(find "$ort/root.new" -name onnxruntime_c_api.h | head -n1)
  [ -n "$header" ] || die "$DEB_PACKAGE has no onnxruntime_c_api.h (did Debian move the headers?)"
  [ -f "$(dirname "$header")/onnxruntime_cxx_api.h" ] || die "$DEB_PACKAGE has no onnxruntime_cxx_api.h"
  local rel=${header#"$ort/root.new/"}
  rm -rf "$ort/root" && mv "$ort/root.new" "$ort/root"
  ln -sfn "root/$(dirname "$rel")" "$ort/include"   # build/ort/include -> root/usr/include/onnxruntime
  basename "$apt/download"/*.deb > "$ort/PACKAGE"
  say "headers from $(cat "$ort/PACKAGE")"
}

if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
  ORT_INC=$ORT_INCLUDE_DIR
  [ -f "$ORT_INC/onnxruntime_c_api.h" ] || die "ORT_INCLUDE_DIR=$ORT_INC has no onnxruntime_c_api.h"
else
  ORT_INC=$BUILD/ort/include
  [ -f "$ORT_INC/onnxruntime_c_api.h" ] || fetch_headers
fi

# --- 2. libraries from the wheels ----------------------------------------------------------------------------------
# The wheel's library is libonnxruntime.so.1.X.Y with SONAME libonnxruntime.so.1; the loader needs that name,
# the linker wants libonnxruntime.so: both are symlinks in build/ort/lib (the programs' rpath).
# Package folders via find_spec (importing torch takes seconds; the warm build should not).
read -r ORT_PKG TORCH_DIR < <("$PY" -c 'import importlib.util as u
print(*(u.find_spec(m).submodule_search_locations[0] for m in ("onnxruntime", "torch")))') \
  || die "onnxruntime or torch is not installed for $PY"
ORT_SO=$(ls "$ORT_PKG"/capi/libonnxruntime.so.1.* 2>/dev/null | head -n1)
[ -n "$ORT_SO" ] || die "no libonnxruntime.so.1.* in $ORT_PKG/capi"
ORT_LIB=$BUILD/ort/lib
mkdir -p "$ORT_LIB"
ln -sfn "$ORT_SO" "$ORT_LIB/libonnxruntime.so.1"
ln -sfn libonnxruntime.so.1 "$ORT_LIB/libonnxruntime.so"

# libstdc++ ABI of the torch build (-D_GLIBCXX_USE_CXX11_ABI must match), cached until torch changes.
if [ ! -s "$BUILD/torch_abi" ] || [ "$TORCH_DIR/lib/libtorch_cpu.so" -nt "$BUILD/torch_abi" ]; then
  "$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' > "$BUILD/torch_abi" \
    || die "torch is not importable by $PY"
fi
TORCH_ABI=$(cat "$BUILD/torch_abi")

# --- 3. compile ----------------------------------------------------------------------------------------------------
# out is rebuilt when any of its inputs (sources, this script, headers, the library it links) is newer.
stale() {
  local out=$1; shift
  [ -f "$out" ] || return 0
  local dep
  for dep in "$@"; do [ "$dep" -nt "$out" ] && return 0; done
  return 1
}

COMMON_DEPS=("$HERE/pp_io.h" "$HERE/build.sh")
ORT_DEPS=("$ORT_INC/onnxruntime_c_api.h" "$ORT_SO")
WARN=(-Wall -Wextra -O2)
pids=()

if stale "$BUILD/ort_c" "$HERE/ort_c.c" "${COMMON_DEPS[@]}" "${ORT_DEPS[@]}"; then
  say "compiling ort_c"
  "$CC" -std=c11 "${WARN[@]}" -I"$ORT_INC" -I"$HERE" "$HERE/ort_c.c" -o "$BUILD/ort_c" \
    -L"$ORT_LIB" -Wl,-rpath,'$ORIGIN/ort/lib' -lonnxruntime &
  pids+=($!)
fi

if stale "$BUILD/ort_cpp" "$HERE/ort_cpp.cpp" "${COMMON_DEPS[@]}" "${ORT_DEPS[@]}" \
         "$ORT_INC/onnxruntime_cxx_api.h"; then
  say "compiling ort_cpp"
  "$CXX" -std=c++17 "${WARN[@]}" -I"$ORT_INC" -I"$HERE" "$HERE/ort_cpp.cpp" -o "$BUILD/ort_cpp" \
    -L"$ORT_LIB" -Wl,-rpath,'$ORIGIN/ort/lib' -lonnxruntime &
  pids+=($!)
fi

if stale "$BUILD/torchscript_cpp" "$HERE/torchscript_cpp.cpp" "${COMMON_DEPS[@]}" "$TORCH_DIR/lib/libtorch_cpu.so"; then
  say "compiling torchscript_cpp (libtorch headers: the slow one)"
  # -isystem: no warnings from torch's headers. --no-as-needed: libtorch.so registers operators at load time
  # and would be dropped by linkers that default to --as-needed (Ubuntu).
  "$CXX" -std=c++17 "${WARN[@]}" -D_GLIBCXX_USE_CXX11_ABI="$TORCH_ABI" \
    -isystem "$TORCH_DIR/include" -isystem "$TORCH_DIR/include/torch/csrc/api/include" -I"$HERE" \
    "$HERE/torchscript_cpp.cpp" -o "$BUILD/torchscript_cpp" \
    -L"$TORCH_DIR/lib" -Wl,-rpath,"$TORCH_DIR/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed &
  pids+=($!)
fi

status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" = 0 ] || die "compilation failed"
say "ready in $(elapsed) s: $BUILD/{ort_c,ort_cpp,torchscript_cpp}"
