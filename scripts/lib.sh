# Shared helpers for scripts/*: installing what a fresh Debian machine lacks.
# Sourced, not run.

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages named, if any is missing.
ensure_apt() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        as_root apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Installs Python packages with pip if they cannot be imported.
ensure_pip() {
    local missing=()
    for spec in "$@"; do
        local mod="${spec%%=*}"
        python3 -c "import ${mod}" >/dev/null 2>&1 || missing+=("$spec")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "pip installing: ${missing[*]}" >&2
        python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${missing[@]}"
    fi
}

# Build dependencies of Larder itself.
ensure_build_deps() {
    ensure_apt libevent-dev pkg-config openssl libssl-dev libcrypt-dev
}

# Arguments that let larder start when this script runs as root (Larder, like memcached,
# refuses root without -u): prints "-u nobody" as root, nothing otherwise.
as_user_args() {
    if [ "$(id -u)" -eq 0 ]; then echo "-u nobody"; fi
}

# Release build of the named products, with the Swift runtime linked statically (no
# toolchain libraries at run time). Every script builds release the same way, so the
# products are never relinked back and forth. Also:
# - no implicit `import _StringProcessing` in any module (ours and dependencies'): each
#   implicit import forces the regex runtime (_StringProcessing + _RegexParser, 1.4 MB
#   stripped, 1.2 MB of RSS) into the binary although nothing uses it. Code that needs
#   Regex or split(separator: "string") must `import _StringProcessing` explicitly (the
#   release build fails otherwise);
# - no $ORIGIN run path (nothing is loaded from next to the binary; lintian flags it).
build_release() {
    local p
    for p in "$@"; do
        swift build -c release --static-swift-stdlib --disable-local-rpath \
            -Xswiftc -Xfrontend -Xswiftc -disable-implicit-string-processing-module-import --product "$p"
    done
}
