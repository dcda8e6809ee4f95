//! Random bytes from the kernel (session nonces, dummy passwords): /dev/urandom, which
//! never blocks once the system has booted, rather than a crate for one read.

use std::io::Read;

/// Fills `buf`; panics only if the kernel's random device cannot be read, when no secret
/// made here could be trusted anyway.
pub fn fill(buf: &mut [u8]) {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}
