# Sourced by scripts/build and scripts/test: the flags every cargo build of this checkout
# uses, so that imgforge, the test suite and the image's binaries stage share one target
# folder and one build. The binaries stage (src/stage/binaries.rs, `reproducible_rustflags`)
# passes the same flags when it builds gateway and worker for this machine's own triple, so
# its cargo run finds them built; a unit test checks that the two agree.
#
# The flags remap the checkout's and cargo's home paths out of the binaries (panic messages
# name source files), so an image does not depend on where it was built.
_imgforge_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
_imgforge_cargo_home=${CARGO_HOME:-${HOME:-/root}/.cargo}
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=${_imgforge_root}=/build/imgforge"$'\x1f'"--remap-path-prefix=${_imgforge_cargo_home}=/build/cargo"
unset _imgforge_root _imgforge_cargo_home
