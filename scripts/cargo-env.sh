# Sourced by scripts/build and scripts/test: where and how every cargo build of imgforge
# runs, so that imgforge, the test suite and the image's binaries stage share one target
# folder and one build of the gateway and worker, and CI's fresh clones reuse it.
# The binaries stage (src/stage/binaries.rs: `host_target_dir`, `reproducible_rustflags`)
# uses the same folder and flags when it builds for this machine's own triple, so its cargo
# run finds the binaries built; a unit test checks that the two agree.
#
# The folder is under imgforge's cache (outside the checkout). The flag remaps cargo's home
# out of the binaries (panic messages name the dependencies' source files by absolute path;
# the checkout's own files are named relative to it already), so an image does not depend
# on where it was built.
_imgforge_cache=${IMGFORGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/imgforge}
export CARGO_TARGET_DIR=$_imgforge_cache/cargo-target
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=${CARGO_HOME:-${HOME:-/root}/.cargo}=/build/cargo"
unset _imgforge_cache
