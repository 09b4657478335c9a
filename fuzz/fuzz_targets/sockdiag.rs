//! A NETLINK_SOCK_DIAG reply datagram, as the kernel (or a broken one) could send it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut found = Vec::new();
    let _ = vigie_agent::sockdiag::parse(data, &mut found);
});
