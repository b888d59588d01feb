#!/usr/bin/env bash
# Build the upstream llama.cpp reference tools (llama-bench, llama-server, llama-perplexity) from
# the llama.cpp sources vendored in the *pinned* llama-cpp-python sdist, so that the reference and
# EdgeLLM's engine run the very same llama.cpp, compiled the same way.
#
#   CACHE_DIR=~/.cache/edgellm bash scripts/build_reference.sh     (normally through `make reference`)
#
# Inputs (environment):
#   CACHE_DIR   cache root (default ~/.cache/edgellm); EdgeLLM reads it back as EDGELLM_CACHE_DIR
#   PYTHON      interpreter with pip and tomllib (default python3)
#   JOBS        parallel compile jobs (default 2)
#   CMAKE_ARGS  extra CMake arguments, the variable llama-cpp-python's own build honours: set it
#               to the same value as for `uv sync` to keep the reference built like the engine
#   UV          passed by the Makefile; not needed here
#
# Layout under $CACHE_DIR/reference:
#   src/llama_cpp_python-<ver>.tar.gz       the sdist, checked against the sha256 in uv.lock
#   llama-cpp-python-<ver>/source/           extracted sdist
#   llama-cpp-python-<ver>/build/            CMake build tree (kept: an interrupted build resumes)
#   llama-cpp-python-<ver>/bin/              the three tools + the shared libraries they load
#   llama-cpp-python-<ver>/bin/.reference-stamp   what bin/ was built from; bin/ and the stamp
#                                                 appear together (one rename), so no stamp = not built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/edgellm}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"
CMAKE_ARGS="${CMAKE_ARGS:-}"
LOCK_FILE="$ROOT/uv.lock"
TOOLS=(llama-bench llama-server llama-perplexity)

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'build_reference: error: %s\n' "$*" >&2
    exit 1
}

for cmd in "$PYTHON" cmake tar sha256sum; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found on PATH"
done
[[ -f "$LOCK_FILE" ]] || die "$LOCK_FILE not found"
# llama-cpp-python's build backend wants CMake >= 3.21. With an older one, pip's metadata step in
# `pip download --no-binary :all:` would even try to compile CMake itself from its sdist.
cmake_version="$(cmake --version | sed -n '1s/^cmake version \([0-9][0-9.]*\).*/\1/p')"
IFS=. read -r cmake_major cmake_minor _ <<<"${cmake_version:-0.0}"
if ((cmake_major < 3 || (cmake_major == 3 && cmake_minor < 21))); then
    die "CMake >= 3.21 is needed, found '${cmake_version:-unknown}'"
fi

# --- 1. The pinned version and sdist hash, from uv.lock ------------------------------------------
lock_info="$(
    "$PYTHON" - "$LOCK_FILE" <<'PY'
import sys

try:
    import tomllib
except ModuleNotFoundError:
    sys.exit("Python >= 3.11 (tomllib) is needed to read uv.lock; set PYTHON=python3.11")

with open(sys.argv[1], "rb") as fh:
    lock = tomllib.load(fh)
found = [p for p in lock.get("package", []) if p.get("name") == "llama-cpp-python"]
if len(found) != 1:
    sys.exit(f"uv.lock: expected one llama-cpp-python package, found {len(found)}")
pkg = found[0]
sdist = pkg.get("sdist") or {}
algo, _, digest = str(sdist.get("hash", "")).partition(":")
if algo != "sha256" or not sdist.get("url"):
    sys.exit("uv.lock: llama-cpp-python has no sdist url / sha256 hash")
print(pkg["version"], digest.lower(), sdist["url"].rsplit("/", 1)[-1])
PY
)" || die "could not read the llama-cpp-python pin from $LOCK_FILE"
read -r VERSION SDIST_SHA256 SDIST_NAME <<<"$lock_info"
[[ "$VERSION" =~ ^[0-9A-Za-z.+!_-]+$ ]] || die "unexpected version in uv.lock: '$VERSION'"
[[ "$SDIST_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "unexpected sdist hash in uv.lock: '$SDIST_SHA256'"
[[ "$SDIST_NAME" =~ ^[A-Za-z0-9._+-]+\.tar\.gz$ ]] || die "unexpected sdist file name: '$SDIST_NAME'"

REF_ROOT="$CACHE_DIR/reference"
DEST="$REF_ROOT/llama-cpp-python-$VERSION"
SDIST_DIR="$REF_ROOT/src"
SDIST="$SDIST_DIR/$SDIST_NAME"
SOURCE_PARENT="$DEST/source"
BUILD_DIR="$DEST/build"
BIN_DIR="$DEST/bin"
STAMP="$BIN_DIR/.reference-stamp"

# The CMake options. Everything not listed stays at llama.cpp's defaults, which is exactly what
# llama-cpp-python 0.3.36's own CMakeLists.txt does for a default CPU wheel (GGML_NATIVE default
# ON, so -march=native for ggml-cpu; OpenMP ON; llamafile sgemm ON; CPU repack ON). Like the wheel
# we build shared libraries in Release mode; $ORIGIN rpaths let them move into bin/ with the tools.
# The rest only cuts network access and unneeded work: no OpenSSL (HTTPS model downloads), no Web
# UI download from Hugging Face, no llguidance / fetched OpenMP, no tests, examples or the
# unified `llama` app. (LLAMA_CURL no longer exists in this llama.cpp: it is deprecated and ignored.)
CMAKE_OPTS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_LLGUIDANCE=OFF
    -DGGML_OPENMP_FETCH=OFF
)
if [[ -n "$CMAKE_ARGS" ]]; then
    read -r -a extra_args <<<"$CMAKE_ARGS"
    CMAKE_OPTS+=("${extra_args[@]}")
fi

# The stamp records what the binaries were built from; any change means a rebuild.
expected_stamp="$(
    printf 'llama-cpp-python=%s\n' "$VERSION"
    printf 'sdist_sha256=%s\n' "$SDIST_SHA256"
    printf 'cmake_options=%s\n' "${CMAKE_OPTS[*]}"
)"

is_built() {
    local tool
    [[ -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$expected_stamp" ]] || return 1
    for tool in "${TOOLS[@]}"; do
        [[ -x "$BIN_DIR/$tool" ]] || return 1
    done
}

report_location() {
    local tool
    say "reference tools for llama-cpp-python $VERSION are in $BIN_DIR"
    for tool in "${TOOLS[@]}"; do
        printf '    %s\n' "$BIN_DIR/$tool"
    done
    if [[ "$CACHE_DIR" != "$HOME/.cache/edgellm" ]]; then
        printf '    (EdgeLLM finds them with EDGELLM_CACHE_DIR=%s)\n' "$CACHE_DIR"
    fi
}

if is_built; then
    say "up to date: llama-cpp-python $VERSION, sdist sha256 ${SDIST_SHA256:0:12}..."
    report_location
    exit 0
fi

mkdir -p "$REF_ROOT" "$SDIST_DIR" "$DEST"

# One build per version at a time (two `make reference` in parallel would trample each other).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEST/.lock"
    if ! flock -n 9; then
        say "another build of the reference tools is running; waiting for it"
        flock 9
    fi
    if is_built; then
        say "built meanwhile by the other run"
        report_location
        exit 0
    fi
fi

start=$SECONDS
say "building llama.cpp reference tools from llama-cpp-python $VERSION into $DEST"
rm -f "$STAMP"

# --- 2. The sdist, from PyPI through pip, checked against uv.lock --------------------------------
sdist_ok() { [[ -f "$SDIST" ]] && [[ "$(sha256sum "$SDIST" | cut -d' ' -f1)" == "$SDIST_SHA256" ]]; }

if sdist_ok; then
    say "sdist already downloaded and verified: $SDIST"
else
    rm -f "$SDIST"
    say "downloading llama-cpp-python==$VERSION sdist with pip"
    "$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" \
        -d "$SDIST_DIR" || die "pip download of llama-cpp-python==$VERSION failed"
    [[ -f "$SDIST" ]] || die "pip did not produce $SDIST (files: $(ls "$SDIST_DIR"))"
    if ! sdist_ok; then
        actual="$(sha256sum "$SDIST" | cut -d' ' -f1)"
        rm -f "$SDIST"
        die "sha256 mismatch for $SDIST_NAME: uv.lock has $SDIST_SHA256, download is $actual"
    fi
    say "sdist verified: sha256 $SDIST_SHA256"
fi

# --- 3. Extract (into a temporary directory, renamed when complete) ------------------------------
SRC_TOP="${SDIST_NAME%.tar.gz}"
SRC_DIR="$SOURCE_PARENT/$SRC_TOP"
EXTRACTED_MARK="$SOURCE_PARENT/.extracted-$SDIST_SHA256"
if [[ -f "$EXTRACTED_MARK" && -f "$SRC_DIR/vendor/llama.cpp/CMakeLists.txt" ]]; then
    say "sources already extracted: $SRC_DIR"
else
    say "extracting $SDIST_NAME"
    rm -rf "$SOURCE_PARENT" "$BUILD_DIR"
    tmp_src="$DEST/source.tmp.$$"
    rm -rf "$tmp_src"
    mkdir -p "$tmp_src"
    tar -xzf "$SDIST" -C "$tmp_src"
    [[ -f "$tmp_src/$SRC_TOP/vendor/llama.cpp/CMakeLists.txt" ]] \
        || die "$SDIST_NAME has no $SRC_TOP/vendor/llama.cpp/CMakeLists.txt"
    touch "$tmp_src/.extracted-$SDIST_SHA256"
    mv "$tmp_src" "$SOURCE_PARENT"
fi
LLAMA_SRC="$SRC_DIR/vendor/llama.cpp"

# --- 4. Configure and build only the three tools -------------------------------------------------
generator=()
if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi

configure() {
    cmake -S "$LLAMA_SRC" -B "$BUILD_DIR" "${generator[@]}" "${CMAKE_OPTS[@]}"
}

say "configuring (cmake ${CMAKE_OPTS[*]})"
# CMake cache entries are sticky: an option dropped from CMAKE_ARGS would keep its old value in an
# existing build tree, so a tree configured with other options is started afresh.
OPTIONS_FILE="$BUILD_DIR/.reference-cmake-options"
if [[ -d "$BUILD_DIR" && "$(cat "$OPTIONS_FILE" 2>/dev/null)" != "${CMAKE_OPTS[*]}" ]]; then
    say "the build tree was configured with other options; starting a clean build directory"
    rm -rf "$BUILD_DIR"
fi
if [[ -d "$BUILD_DIR" ]]; then
    if ! configure; then
        # A configure interrupted half-way (or another generator) can leave a broken cache.
        say "configure failed on the existing build tree; retrying from a clean build directory"
        rm -rf "$BUILD_DIR"
        configure || die "cmake configure failed"
    fi
else
    configure || die "cmake configure failed"
fi
printf '%s\n' "${CMAKE_OPTS[*]}" >"$OPTIONS_FILE"
native="$(sed -n 's/^GGML_NATIVE:BOOL=//p' "$BUILD_DIR/CMakeCache.txt")"
say "GGML_NATIVE=${native:-?} (llama-cpp-python's default wheel build uses the same default)"

say "compiling ${TOOLS[*]} with $JOBS jobs (several minutes on a small CPU)"
cmake --build "$BUILD_DIR" --target "${TOOLS[@]}" -j "$JOBS" || die "build failed"

# --- 5. Install: stage bin/ next to it, check it runs, swap it in, then write the stamp -----------
stage="$DEST/bin.tmp.$$"
rm -rf "$stage"
mkdir -p "$stage"
for tool in "${TOOLS[@]}"; do
    [[ -x "$BUILD_DIR/bin/$tool" ]] || die "build produced no $BUILD_DIR/bin/$tool"
    cp -p "$BUILD_DIR/bin/$tool" "$stage/"
done
shopt -s nullglob
libs=("$BUILD_DIR"/bin/*.so "$BUILD_DIR"/bin/*.so.*)
shopt -u nullglob
if ((${#libs[@]})); then
    cp -P -p "${libs[@]}" "$stage/"
fi

say "checking that the staged tools start"
"$stage/llama-bench" --help >/dev/null || die "staged llama-bench does not run"
"$stage/llama-server" --version >/dev/null 2>&1 || die "staged llama-server does not run"
"$stage/llama-perplexity" --version >/dev/null 2>&1 || die "staged llama-perplexity does not run"

printf '%s\n' "$expected_stamp" >"$stage/.reference-stamp"
old="$DEST/bin.old.$$"
if [[ -e "$BIN_DIR" ]]; then
    mv "$BIN_DIR" "$old"
fi
mv "$stage" "$BIN_DIR"
rm -rf "$old" "$DEST"/bin.tmp.* "$DEST"/bin.old.*

say "done in $((SECONDS - start)) s"
report_location
