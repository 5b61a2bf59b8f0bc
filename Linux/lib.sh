# Shared by the scripts in Linux/: the cache folder, locking, and fetching Debian packages.
# Sourced, not run.

# Everything built or downloaded lives here, outside the clone, so a CI run on the same machine
# reuses it: SWIFTLET_CACHE, else $XDG_CACHE_HOME/swiftlet, else ~/.cache/swiftlet.
swiftlet_cache=${SWIFTLET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swiftlet}
mkdir -p "$swiftlet_cache"

# Exit status for "cannot be had here" (no package lists, no network): callers skip on it and
# fail on anything else.
readonly unavailable_status=3

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
unavailable() { echo "$(basename "$0"): $*" >&2; exit "$unavailable_status"; }

# Runs the rest of the script under an exclusive lock on NAME, so parallel tests wait for one
# build instead of racing it.
hold_lock() {
    exec {lock_fd}>"$swiftlet_cache/$1.lock"
    flock "$lock_fd"
}

# The version apt would download for PACKAGE (empty if apt knows no such package).
candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2; exit }'
}

# The versioned linux-image package that Debian's linux-image-amd64 depends on (its stock kernel);
# exits with the unavailable status if apt knows none.
stock_kernel_package() {
    local package
    package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$package" ] || unavailable "apt knows no linux-image-amd64 (run 'apt-get update' first)"
    echo "$package"
}

# Downloads PACKAGE's .deb into the cache's downloads folder (once per version) and prints its path.
fetch_deb() {
    local package=$1 version
    version=$(candidate_version "$package")
    [ -n "$version" ] || unavailable "apt knows no package $package (run 'apt-get update' first)"
    local dir="$swiftlet_cache/downloads"
    mkdir -p "$dir"
    # apt-get names the file PACKAGE_VERSION_ARCH.deb with the epoch's colon written %3a.
    local pattern="${package}_${version//:/%3a}_*.deb"
    if ! compgen -G "$dir/$pattern" >/dev/null; then
        local work
        work=$(mktemp -d "$dir/.fetch.XXXXXX")
        if ! (cd "$work" && apt-get download "$package=$version" >/dev/null 2>"$work/err"); then
            local why
            why=$(grep -v '^W:' "$work/err" | tail -n 1)
            rm -rf "$work"
            unavailable "could not download $package $version: ${why:-apt-get download failed}"
        fi
        mv "$work"/*.deb "$dir/"
        rm -rf "$work"
    fi
    compgen -G "$dir/$pattern" | head -n 1
}
